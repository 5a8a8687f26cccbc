# recovarConfigVersion.cmake: the version of librecovar, read from recovar.h
# (RCV_VERSION_MAJOR/MINOR/PATCH). Compatibility follows semantic versioning: the same major
# version (the same minor version while the major is 0) and not older than requested.

get_filename_component(_recovar_root "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
set(_recovar_header "${_recovar_root}/include/recovar.h")
set(PACKAGE_VERSION "0.0.0")
if(EXISTS "${_recovar_header}")
  file(STRINGS "${_recovar_header}" _recovar_defs REGEX "^#define RCV_VERSION_(MAJOR|MINOR|PATCH) ")
  foreach(_part MAJOR MINOR PATCH)
    set(_recovar_${_part} 0)
    foreach(_line IN LISTS _recovar_defs)
      if(_line MATCHES "^#define RCV_VERSION_${_part} +([0-9]+)")
        set(_recovar_${_part} "${CMAKE_MATCH_1}")
      endif()
    endforeach()
  endforeach()
  set(PACKAGE_VERSION "${_recovar_MAJOR}.${_recovar_MINOR}.${_recovar_PATCH}")
endif()

if("${PACKAGE_FIND_VERSION}" STREQUAL "")
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
elseif("${PACKAGE_FIND_VERSION}" VERSION_GREATER "${PACKAGE_VERSION}")
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
elseif(NOT "${PACKAGE_FIND_VERSION_MAJOR}" EQUAL "${_recovar_MAJOR}")
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
elseif("${_recovar_MAJOR}" EQUAL 0 AND NOT "${PACKAGE_FIND_VERSION_COUNT}" LESS 2
       AND NOT "${PACKAGE_FIND_VERSION_MINOR}" EQUAL "${_recovar_MINOR}")
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if("${PACKAGE_FIND_VERSION}" STREQUAL "${PACKAGE_VERSION}")
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()

# A 64-bit library only.
if(NOT CMAKE_SIZEOF_VOID_P STREQUAL "" AND NOT CMAKE_SIZEOF_VOID_P EQUAL 8)
  set(PACKAGE_VERSION "${PACKAGE_VERSION} (64-bit)")
  set(PACKAGE_VERSION_UNSUITABLE TRUE)
endif()

unset(_recovar_root)
unset(_recovar_header)
unset(_recovar_defs)
