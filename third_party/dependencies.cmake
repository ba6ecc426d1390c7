# CMake glue for system libraries (Debian packages; see scripts/setup.sh).
# Included (not add_subdirectory) from the root: imported targets must be
# visible to every folder.
# Nothing is vendored: every target here is an import.

find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)
# MPI launches and places the ranks of a distributed run (engine/distributed.h)
# and carries simcuda's NCCL (kernels/sim/nccl.cpp); Debian's Open MPI.
set(MPI_CXX_SKIP_MPICXX ON)  # the C API from C++, without the old C++ bindings
find_package(MPI REQUIRED COMPONENTS CXX)

# The CUDA API headers. The cuda flavour needs the toolkit. The sim flavour
# compiles its host code against the toolkit's cuda_runtime_api.h,
# cublas_v2.h and cufft.h when the toolkit is there (so that the two builds
# share every call site's declarations), or else against simcuda's own
# declarations of the same subset (kernels/sim/include): a CPU-only machine
# needs no toolkit. TIMBRE_SIM_HEADERS=simcuda chooses those even where a
# toolkit is installed (CI builds the sim suite so).
if(TIMBRE_BACKEND STREQUAL "cuda")
  find_package(CUDAToolkit REQUIRED)
  set(_timbre_headers toolkit)
else()
  if(NOT DEFINED TIMBRE_SIM_HEADERS OR TIMBRE_SIM_HEADERS STREQUAL "toolkit")
    find_package(CUDAToolkit QUIET)
  endif()
  if(CUDAToolkit_FOUND)
    set(_timbre_default_headers toolkit)
  else()
    set(_timbre_default_headers simcuda)
  endif()
  set(TIMBRE_SIM_HEADERS ${_timbre_default_headers} CACHE STRING
      "sim flavour: the CUDA API declarations from the toolkit or simcuda's own")
  set_property(CACHE TIMBRE_SIM_HEADERS PROPERTY STRINGS toolkit simcuda)
  if(NOT TIMBRE_SIM_HEADERS MATCHES "^(toolkit|simcuda)$")
    message(FATAL_ERROR "TIMBRE_SIM_HEADERS must be toolkit or simcuda, not '${TIMBRE_SIM_HEADERS}'")
  endif()
  if(TIMBRE_SIM_HEADERS STREQUAL "toolkit" AND NOT CUDAToolkit_FOUND)
    message(FATAL_ERROR "TIMBRE_SIM_HEADERS=toolkit, but no CUDA toolkit was found "
                        "(-DTIMBRE_SIM_HEADERS=simcuda builds without one)")
  endif()
  set(_timbre_headers ${TIMBRE_SIM_HEADERS})
endif()
add_library(timbre_cuda_headers INTERFACE)
if(_timbre_headers STREQUAL "toolkit")
  target_include_directories(timbre_cuda_headers SYSTEM INTERFACE ${CUDAToolkit_INCLUDE_DIRS})
else()
  target_include_directories(timbre_cuda_headers SYSTEM INTERFACE
                             ${PROJECT_SOURCE_DIR}/kernels/sim/include)
endif()
message(STATUS "timbre: ${TIMBRE_BACKEND} flavour, CUDA API headers from ${_timbre_headers}")

if(TIMBRE_BACKEND STREQUAL "sim")
  find_package(Boost 1.71 REQUIRED COMPONENTS context)
  pkg_check_modules(OPENBLAS REQUIRED IMPORTED_TARGET openblas)
  pkg_check_modules(FFTW3F REQUIRED IMPORTED_TARGET fftw3f)
  pkg_check_modules(FFTW3 REQUIRED IMPORTED_TARGET fftw3)
  find_package(OpenMP REQUIRED COMPONENTS CXX)

  # Thrust/CUB: the toolkit's CCCL, or Debian's libthrust-dev and libcub-dev
  # without it; in the sim flavour Thrust runs on its OpenMP device system.
  add_library(timbre_thrust INTERFACE)
  if(_timbre_headers STREQUAL "toolkit")
    target_include_directories(timbre_thrust SYSTEM INTERFACE ${CUDAToolkit_INCLUDE_DIRS}/cccl)
  else()
    find_path(TIMBRE_THRUST_INCLUDE thrust/device_vector.h)
    find_path(TIMBRE_CUB_INCLUDE cub/cub.cuh)
    if(NOT TIMBRE_THRUST_INCLUDE OR NOT TIMBRE_CUB_INCLUDE)
      message(FATAL_ERROR "Thrust and CUB not found: install the Debian packages libthrust-dev "
                          "and libcub-dev (scripts/setup.sh does)")
    endif()
    target_include_directories(timbre_thrust SYSTEM INTERFACE ${TIMBRE_THRUST_INCLUDE})
  endif()
  target_compile_definitions(timbre_thrust INTERFACE
                             THRUST_DEVICE_SYSTEM=THRUST_DEVICE_SYSTEM_OMP)
  target_link_libraries(timbre_thrust INTERFACE OpenMP::OpenMP_CXX timbre_cuda_headers)
  if(TIMBRE_SANITIZE)
    # Thrust's execution-policy tags bind references through null pointers
    # (harmless, but UBSan's null check stops on it).
    target_compile_options(timbre_thrust INTERFACE -fno-sanitize=null)
  endif()
else()
  add_library(timbre_thrust INTERFACE)  # nvcc finds CCCL on its own
endif()
add_library(timbre::thrust ALIAS timbre_thrust)

if(TIMBRE_BUILD_TESTS)
  find_package(GTest REQUIRED)
  include(GoogleTest)
endif()
if(TIMBRE_BUILD_BENCH)
  find_package(benchmark REQUIRED)
endif()

# Audio, features and tools (features/, models/, tools/).
pkg_check_modules(MPG123 REQUIRED IMPORTED_TARGET libmpg123)
pkg_check_modules(SNDFILE REQUIRED IMPORTED_TARGET sndfile)
pkg_check_modules(SOXR REQUIRED IMPORTED_TARGET soxr)
pkg_check_modules(HDF5 REQUIRED IMPORTED_TARGET hdf5)
find_package(nlohmann_json 3 REQUIRED)
find_package(fmt REQUIRED)
pkg_check_modules(TOMLPP REQUIRED IMPORTED_TARGET tomlplusplus)  # config.toml
find_package(ZLIB REQUIRED)  # crc32 of checkpoint contents

# libcsv, LAME and libsvm ship no pkg-config file.
function(timbre_import_library target header library)
  find_path(_${target}_inc ${header} REQUIRED)
  find_library(_${target}_lib ${library} REQUIRED)
  add_library(${target} INTERFACE IMPORTED GLOBAL)
  target_include_directories(${target} INTERFACE ${_${target}_inc})
  target_link_libraries(${target} INTERFACE ${_${target}_lib})
endfunction()
timbre_import_library(timbre::csv csv.h csv)
timbre_import_library(timbre::mp3lame lame/lame.h mp3lame)
timbre_import_library(timbre::svm libsvm/svm.h svm)
