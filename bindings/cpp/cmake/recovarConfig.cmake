# recovarConfig.cmake: find_package(recovar) support for librecovar, the C ABI of RECOVAR.
#
# Imported targets:
#   recovar::recovar         the shared library librecovar.so, with the include folder
#                            holding recovar.h (C) and recovar.hpp (header-only C++ wrapper)
#   recovar::recovar_static  the static library librecovar.a with the system libraries it
#                            needs (threads, dl, m, rt, util, gcc_s)
# Variables: recovar_FOUND, recovar_VERSION (from recovarConfigVersion.cmake), recovar_INCLUDE_DIRS, recovar_LIBRARY,
# recovar_STATIC_LIBRARY.
#
# Two layouts are understood, so the same file works in both:
#   installed   PREFIX/lib/cmake/recovar/recovarConfig.cmake (bindings/cpp/install.sh):
#               headers in PREFIX/include, libraries in PREFIX/lib
#   build tree  REPO/bindings/cpp/cmake/recovarConfig.cmake (point recovar_DIR at that
#               folder): headers in REPO/include and REPO/bindings/cpp, libraries in
#               RECOVAR_LIBRARY_DIR if set, else $CARGO_TARGET_DIR/release, else
#               REPO/target/release (run `cargo build --release` first)

cmake_policy(PUSH)
cmake_policy(VERSION 3.16)

get_filename_component(_recovar_root "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

if(EXISTS "${_recovar_root}/include/recovar.hpp")
  set(recovar_INCLUDE_DIRS "${_recovar_root}/include")
  set(_recovar_libdir "${_recovar_root}/lib")
elseif(EXISTS "${_recovar_root}/bindings/cpp/recovar.hpp"
       AND EXISTS "${_recovar_root}/include/recovar.h")
  set(recovar_INCLUDE_DIRS "${_recovar_root}/include" "${_recovar_root}/bindings/cpp")
  if(RECOVAR_LIBRARY_DIR)
    set(_recovar_libdir "${RECOVAR_LIBRARY_DIR}")
  elseif(DEFINED ENV{CARGO_TARGET_DIR} AND NOT "$ENV{CARGO_TARGET_DIR}" STREQUAL "")
    set(_recovar_libdir "$ENV{CARGO_TARGET_DIR}/release")
  else()
    set(_recovar_libdir "${_recovar_root}/target/release")
  endif()
else()
  set(recovar_FOUND FALSE)
  set(recovar_NOT_FOUND_MESSAGE
      "recovar.hpp not found next to ${CMAKE_CURRENT_LIST_FILE} (neither an install prefix nor the source tree)")
  cmake_policy(POP)
  return()
endif()

set(recovar_LIBRARY "${_recovar_libdir}/librecovar${CMAKE_SHARED_LIBRARY_SUFFIX}")
set(recovar_STATIC_LIBRARY "${_recovar_libdir}/librecovar${CMAKE_STATIC_LIBRARY_SUFFIX}")

if(NOT EXISTS "${recovar_LIBRARY}" AND NOT EXISTS "${recovar_STATIC_LIBRARY}")
  set(recovar_FOUND FALSE)
  set(recovar_NOT_FOUND_MESSAGE
      "librecovar not found in ${_recovar_libdir}: run `cargo build --release` (or set RECOVAR_LIBRARY_DIR)")
  cmake_policy(POP)
  return()
endif()

# System libraries the Rust standard library needs when linked statically (rustc
# --print native-static-libs on Linux/glibc).
set(_recovar_native_libs "")
if(CMAKE_SYSTEM_NAME STREQUAL "Linux")
  find_package(Threads REQUIRED)
  set(_recovar_native_libs Threads::Threads ${CMAKE_DL_LIBS} m rt util gcc_s)
elseif(APPLE)
  set(_recovar_native_libs "-framework CoreFoundation" "-framework Security" System c m)
endif()

if(EXISTS "${recovar_LIBRARY}" AND NOT TARGET recovar::recovar)
  add_library(recovar::recovar SHARED IMPORTED)
  set_target_properties(recovar::recovar PROPERTIES
    IMPORTED_LOCATION "${recovar_LIBRARY}"
    # librecovar.so carries no SONAME: link it as -lrecovar (CMake then adds the folder to
    # the build RPATH) rather than by its absolute path.
    IMPORTED_NO_SONAME TRUE
    INTERFACE_INCLUDE_DIRECTORIES "${recovar_INCLUDE_DIRS}")
endif()

if(EXISTS "${recovar_STATIC_LIBRARY}" AND NOT TARGET recovar::recovar_static)
  add_library(recovar::recovar_static STATIC IMPORTED)
  set_target_properties(recovar::recovar_static PROPERTIES
    IMPORTED_LOCATION "${recovar_STATIC_LIBRARY}"
    IMPORTED_LINK_INTERFACE_LANGUAGES "C"
    INTERFACE_INCLUDE_DIRECTORIES "${recovar_INCLUDE_DIRS}"
    INTERFACE_LINK_LIBRARIES "${_recovar_native_libs}")
endif()

if(NOT TARGET recovar::recovar)
  # Only the static library exists: let recovar::recovar name it.
  add_library(recovar::recovar INTERFACE IMPORTED)
  set_target_properties(recovar::recovar PROPERTIES
    INTERFACE_LINK_LIBRARIES recovar::recovar_static)
endif()

set(recovar_FOUND TRUE)

unset(_recovar_root)
unset(_recovar_libdir)
unset(_recovar_native_libs)
cmake_policy(POP)
