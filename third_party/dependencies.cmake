# CMake glue for system libraries (Debian packages; see scripts/setup.sh).
# Included (not add_subdirectory) from the root: imported targets must be
# visible to every folder.
# Nothing is vendored: every target here is an import.

find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)

# The CUDA toolkit's headers are used by both flavours: the sim flavour
# compiles host code against the real cuda_runtime_api.h, cublas_v2.h and
# cufft.h so that the two builds share every call site.
find_package(CUDAToolkit REQUIRED)
add_library(timbre_cuda_headers INTERFACE)
target_include_directories(timbre_cuda_headers SYSTEM INTERFACE ${CUDAToolkit_INCLUDE_DIRS})

if(TIMBRE_BACKEND STREQUAL "sim")
  find_package(Boost 1.71 REQUIRED COMPONENTS context)
  pkg_check_modules(OPENBLAS REQUIRED IMPORTED_TARGET openblas)
  pkg_check_modules(FFTW3F REQUIRED IMPORTED_TARGET fftw3f)
  pkg_check_modules(FFTW3 REQUIRED IMPORTED_TARGET fftw3)
  find_package(OpenMP REQUIRED COMPONENTS CXX)

  # Thrust/CUB (CCCL) ship with the toolkit; in the sim flavour Thrust runs on
  # its OpenMP device system.
  add_library(timbre_thrust INTERFACE)
  target_include_directories(timbre_thrust SYSTEM INTERFACE
                             ${CUDAToolkit_INCLUDE_DIRS}/cccl)
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
