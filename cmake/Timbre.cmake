# Helpers shared by every folder's CMakeLists.txt.

# timbre_cuda_sources(<target>): the target's .cu files are CUDA in the cuda
# flavour and plain C++ (compiled by g++ against simcuda) in the sim flavour.
function(timbre_cuda_sources target)
  get_target_property(_srcs ${target} SOURCES)
  foreach(_s IN LISTS _srcs)
    if(_s MATCHES "\\.cu$")
      if(TIMBRE_BACKEND STREQUAL "sim")
        set_source_files_properties(${_s} TARGET_DIRECTORY ${target}
                                    PROPERTIES LANGUAGE CXX)
      endif()
    endif()
  endforeach()
  if(TIMBRE_BACKEND STREQUAL "cuda")
    # ptxas's per-kernel register / spill / shared-memory report goes to the
    # build log; scripts/ptxas_report.sh collects it.
    target_compile_options(${target} PRIVATE
      $<$<COMPILE_LANGUAGE:CUDA>:-Xptxas=-v --expt-relaxed-constexpr -lineinfo>)
  endif()
endfunction()

# timbre_add_test(<name> SOURCES ... LIBS ... [LABELS ...]): one GoogleTest
# executable, registered with CTest test by test.
function(timbre_add_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} timbre_testing GTest::gtest_main)
  timbre_cuda_sources(${name})
  if(TIMBRE_BACKEND STREQUAL "sim")
    # Tests run here: register each TEST with CTest.
    gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60
      PROPERTIES LABELS "${T_LABELS}"
                 ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE;OPENBLAS_NUM_THREADS=1")
  else()
    # Every test runs on the device (label gpu, beside its area's label).
    # Tests are listed when ctest runs (PRE_TEST), not at build time, so the
    # flavour builds on a machine without a GPU (CI), and `ctest -N` lists
    # every test there too (listing touches no device).
    gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60
      PROPERTIES LABELS "gpu;${T_LABELS}")
  endif()
endfunction()
