# Helpers shared by every CMakeLists.txt in the tree.

# hostmesh_proto(NAME <lib> FILES <a.proto> ... [DEPENDS <other proto libs>])
# Generates protobuf-c sources at build time into ${HOSTMESH_PROTO_OUT} and a
# static library <lib>; also Python modules into ${HOSTMESH_PYTHON_OUT} for
# the independent grpcio clients used by tests.
set(HOSTMESH_PROTO_OUT ${CMAKE_BINARY_DIR}/proto-gen)
set(HOSTMESH_PYTHON_OUT ${CMAKE_BINARY_DIR}/python)
set(HOSTMESH_PROTO_SRC ${CMAKE_SOURCE_DIR}/proto)
set(HOSTMESH_WKT_DIR /usr/include)
file(MAKE_DIRECTORY ${HOSTMESH_PROTO_OUT} ${HOSTMESH_PYTHON_OUT})

function(hostmesh_proto)
  cmake_parse_arguments(P "" "NAME;BASE" "FILES;DEPENDS" ${ARGN})
  if(NOT P_BASE)
    set(P_BASE ${HOSTMESH_PROTO_SRC})
  endif()
  set(srcs)
  set(pys)
  foreach(f ${P_FILES})
    string(REGEX REPLACE "\\.proto$" "" stem ${f})
    set(c ${HOSTMESH_PROTO_OUT}/${stem}.pb-c.c)
    set(h ${HOSTMESH_PROTO_OUT}/${stem}.pb-c.h)
    add_custom_command(
      OUTPUT ${c} ${h}
      COMMAND ${PROTOC_C} --c_out=${HOSTMESH_PROTO_OUT} -I${HOSTMESH_PROTO_SRC} -I${HOSTMESH_WKT_DIR} ${P_BASE}/${f}
      DEPENDS ${P_BASE}/${f}
      COMMENT "protoc-c ${f}" VERBATIM)
    list(APPEND srcs ${c})
    # grpc/* would shadow the grpcio package in Python; tests speak Health raw.
    if(NOT P_BASE STREQUAL HOSTMESH_WKT_DIR AND NOT f MATCHES "^grpc/")
      string(REGEX REPLACE "\\.proto$" "_pb2.py" py ${f})
      add_custom_command(
        OUTPUT ${HOSTMESH_PYTHON_OUT}/${py}
        COMMAND ${PROTOC} --python_out=${HOSTMESH_PYTHON_OUT} -I${HOSTMESH_PROTO_SRC} -I${HOSTMESH_WKT_DIR} ${P_BASE}/${f}
        DEPENDS ${P_BASE}/${f}
        COMMENT "protoc python ${f}" VERBATIM)
      list(APPEND pys ${HOSTMESH_PYTHON_OUT}/${py})
    endif()
  endforeach()
  add_library(${P_NAME} STATIC ${srcs})
  target_include_directories(${P_NAME} PUBLIC ${HOSTMESH_PROTO_OUT})
  target_link_libraries(${P_NAME} PUBLIC PkgConfig::PROTOBUFC ${P_DEPENDS})
  # Generated code is not ours to lint.
  target_compile_options(${P_NAME} PRIVATE -Wno-unused-parameter -Wno-error)
  if(pys)
    add_custom_target(${P_NAME}_py ALL DEPENDS ${pys})
  endif()
endfunction()

# hostmesh_unit_test(NAME <name> SOURCES <files> LIBS <libs>)
function(hostmesh_unit_test)
  cmake_parse_arguments(T "" "NAME" "SOURCES;LIBS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} PkgConfig::CMOCKA)
  add_test(NAME ${T_NAME} COMMAND ${T_NAME})
  set_tests_properties(${T_NAME} PROPERTIES LABELS unit TIMEOUT 120)
endfunction()

# hostmesh_fuzzer(NAME <name> SOURCES <files> LIBS <libs> CORPUS <dir>)
# With clang and HOSTMESH_FUZZ=ON it is a libFuzzer binary; otherwise it is
# linked with a small driver that replays every file of the corpus, which
# ctest runs (crash inputs committed there are regression tests).
function(hostmesh_fuzzer)
  cmake_parse_arguments(F "" "NAME;CORPUS" "SOURCES;LIBS" ${ARGN})
  if(HOSTMESH_FUZZ)
    add_executable(${F_NAME} ${F_SOURCES})
    target_compile_options(${F_NAME} PRIVATE -fsanitize=fuzzer)
    target_link_options(${F_NAME} PRIVATE -fsanitize=fuzzer)
    add_test(NAME ${F_NAME}-replay COMMAND ${F_NAME} -runs=0 ${F_CORPUS})
  else()
    add_executable(${F_NAME} ${F_SOURCES} ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz-replay.c)
    add_test(NAME ${F_NAME}-replay COMMAND ${F_NAME} ${F_CORPUS})
  endif()
  target_link_libraries(${F_NAME} PRIVATE ${F_LIBS})
  set_tests_properties(${F_NAME}-replay PROPERTIES LABELS fuzz TIMEOUT 300)
endfunction()

# hostmesh_py_test(NAME <name> SCRIPT <file.py> [LABELS ...] [TIMEOUT s])
# Integration tests in Python (Debian's python3 with grpcio, jwt, jwcrypto).
# WRAPPER runs the test under a command of its own (a namespace, say); ENV
# adds variables.
function(hostmesh_py_test)
  cmake_parse_arguments(T "" "NAME;SCRIPT;TIMEOUT;WRAPPER" "LABELS;ENV" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  if(NOT T_LABELS)
    set(T_LABELS integration)
  endif()
  add_test(NAME ${T_NAME} COMMAND ${T_WRAPPER} /usr/bin/python3 -u ${T_SCRIPT})
  set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "HOSTMESH_BUILD_DIR=${CMAKE_BINARY_DIR};HOSTMESH_SOURCE_DIR=${CMAKE_SOURCE_DIR};PYTHONPATH=${HOSTMESH_PYTHON_OUT}:${CMAKE_SOURCE_DIR}/tests/integration;PYTHONDONTWRITEBYTECODE=1;${T_ENV}")
endfunction()
