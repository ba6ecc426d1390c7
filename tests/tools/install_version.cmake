# cmake -DBUILD=<build dir> -DPREFIX=<scratch prefix> -DVERSION=<x.y.z> -P install_version.cmake
#
# Installs the build into a fresh PREFIX as a user would (`cmake --install`),
# then checks that PREFIX/bin/timbre runs from there and that --version
# names the version, a commit and the backend.
file(REMOVE_RECURSE "${PREFIX}")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD}" --prefix "${PREFIX}"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc}):\n${out}${err}")
endif()
set(exe "${PREFIX}/bin/timbre")
if(NOT EXISTS "${exe}")
  message(FATAL_ERROR "cmake --install did not put timbre in ${PREFIX}/bin:\n${out}")
endif()
execute_process(COMMAND "${exe}" --version RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err WORKING_DIRECTORY "${PREFIX}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${exe} --version exited ${rc}:\n${out}${err}")
endif()
string(REPLACE "." "\\." version_re "${VERSION}")
if(NOT out MATCHES "^timbre ${version_re} \\(commit ([0-9a-f]+(-dirty)?|unknown)\\)\nbackend: (sim|cuda) ")
  message(FATAL_ERROR "unexpected --version output:\n${out}")
endif()
message(STATUS "${out}")
file(REMOVE_RECURSE "${PREFIX}")
