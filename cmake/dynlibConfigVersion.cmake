# Version file of the dynlib CMake package (tests/install.rs checks it against Cargo.toml).
# While the major version is 0, a minor release may break the API, so a request is satisfied
# by the same major.minor only (like the SONAME libdynlib.so.0.MINOR).
set(PACKAGE_VERSION "0.1.0")

if(PACKAGE_FIND_VERSION_MAJOR EQUAL 0)
  set(_dynlib_compatible_minor TRUE)
  if(NOT PACKAGE_FIND_VERSION_MINOR EQUAL 1)
    set(_dynlib_compatible_minor FALSE)
  endif()
else()
  set(_dynlib_compatible_minor FALSE)
endif()

if(PACKAGE_FIND_VERSION AND (PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION OR NOT _dynlib_compatible_minor))
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()

# A 32-bit and a 64-bit build do not mix.
if(NOT CMAKE_SIZEOF_VOID_P STREQUAL "8")
  set(PACKAGE_VERSION "${PACKAGE_VERSION} (64-bit)")
  set(PACKAGE_VERSION_UNSUITABLE TRUE)
endif()
unset(_dynlib_compatible_minor)
