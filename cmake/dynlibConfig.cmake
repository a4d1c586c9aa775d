# CMake package of the dynlib C library: find_package(dynlib CONFIG) gives the imported targets
#   dynlib::dynlib         the shared library (libdynlib.so) with include/dynlib.h
#   dynlib::dynlib_static  the static library (libdynlib.a) with what it needs to link
# Installed by `cargo cinstall` to <prefix>/share/cmake/dynlib/ (cargo-c's data directory),
# where find_package looks with CMAKE_PREFIX_PATH=<prefix>. Relocatable: paths are computed
# from this file's location.

get_filename_component(_dynlib_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

find_path(dynlib_INCLUDE_DIR dynlib.h
  PATHS "${_dynlib_prefix}/include" NO_DEFAULT_PATH)
set(_dynlib_libdirs
  "${_dynlib_prefix}/lib" "${_dynlib_prefix}/lib64" "${_dynlib_prefix}/lib/${CMAKE_LIBRARY_ARCHITECTURE}")
find_library(dynlib_LIBRARY NAMES dynlib PATHS ${_dynlib_libdirs} NO_DEFAULT_PATH)
find_library(dynlib_STATIC_LIBRARY
  NAMES "${CMAKE_STATIC_LIBRARY_PREFIX}dynlib${CMAKE_STATIC_LIBRARY_SUFFIX}"
  PATHS ${_dynlib_libdirs} NO_DEFAULT_PATH)

set(dynlib_FOUND TRUE)
if(NOT dynlib_INCLUDE_DIR OR (NOT dynlib_LIBRARY AND NOT dynlib_STATIC_LIBRARY))
  set(dynlib_FOUND FALSE)
  set(dynlib_NOT_FOUND_MESSAGE
    "dynlib: no dynlib.h or libdynlib under ${_dynlib_prefix} (include: ${dynlib_INCLUDE_DIR}, library: ${dynlib_LIBRARY} ${dynlib_STATIC_LIBRARY})")
  return()
endif()

if(dynlib_LIBRARY AND NOT TARGET dynlib::dynlib)
  add_library(dynlib::dynlib SHARED IMPORTED)
  set_target_properties(dynlib::dynlib PROPERTIES
    IMPORTED_LOCATION "${dynlib_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${dynlib_INCLUDE_DIR}")
endif()

if(dynlib_STATIC_LIBRARY AND NOT TARGET dynlib::dynlib_static)
  find_package(Threads REQUIRED)
  add_library(dynlib::dynlib_static STATIC IMPORTED)
  set_target_properties(dynlib::dynlib_static PROPERTIES
    IMPORTED_LOCATION "${dynlib_STATIC_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${dynlib_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "Threads::Threads;${CMAKE_DL_LIBS};m")
endif()

# Only a static library installed: dynlib::dynlib is that one.
if(NOT TARGET dynlib::dynlib AND TARGET dynlib::dynlib_static)
  add_library(dynlib::dynlib INTERFACE IMPORTED)
  set_target_properties(dynlib::dynlib PROPERTIES INTERFACE_LINK_LIBRARIES dynlib::dynlib_static)
endif()

unset(_dynlib_prefix)
unset(_dynlib_libdirs)
