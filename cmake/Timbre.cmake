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

# timbre_add_test(<name> SOURCES ... LIBS ... [LABELS ...] [OP_CASES]): one
# GoogleTest executable, registered with CTest test by test. OP_CASES: the
# executable holds rows of the kernels' op-case table
# (tests/kernels/op_cases.h): it links the table's driver, and its rows run
# as one CTest test, <name>.op_cases (a failing row is named in its output),
# not one process per row (thousands of rows: the start-up of each process
# would cost more than the rows).
function(timbre_add_test name)
  cmake_parse_arguments(T "OP_CASES" "" "SOURCES;LIBS;LABELS" ${ARGN})
  if(T_OP_CASES)
    list(APPEND T_SOURCES ${PROJECT_SOURCE_DIR}/tests/kernels/test_op_cases.cpp)
    set(_filter TEST_FILTER "-OpCases*")
  endif()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} timbre_testing GTest::gtest_main)
  timbre_cuda_sources(${name})
  if(TIMBRE_BACKEND STREQUAL "sim")
    # Tests run here: register each TEST with CTest.
    gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 ${_filter}
      PROPERTIES LABELS "${T_LABELS}"
                 ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE;OPENBLAS_NUM_THREADS=1")
    set(_labels "${T_LABELS}")
    set(_env "OMP_WAIT_POLICY=PASSIVE;OPENBLAS_NUM_THREADS=1")
  else()
    # Every test runs on the device (label gpu, beside its area's label).
    # Tests are listed when ctest runs (PRE_TEST), not at build time, so the
    # flavour builds on a machine without a GPU (CI), and `ctest -N` lists
    # every test there too (listing touches no device).
    gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60 ${_filter}
      PROPERTIES LABELS "gpu;${T_LABELS}")
    set(_labels "gpu;${T_LABELS}")
    set(_env "")
  endif()
  if(T_OP_CASES)
    add_test(NAME ${name}.op_cases COMMAND ${name} --gtest_filter=OpCases*)
    set_tests_properties(${name}.op_cases PROPERTIES LABELS "${_labels}" TIMEOUT 900)
    if(_env)
      set_tests_properties(${name}.op_cases PROPERTIES ENVIRONMENT "${_env}")
    endif()
  endif()
endfunction()
