# Cross-building for arm64 (aarch64) on an x86_64 Debian 12 machine: Debian's cross compilers
# (crossbuild-essential-arm64) against an arm64 sysroot of Debian's :arm64 packages
# (scripts/arm64-sysroot.sh). scripts/build-arm64.sh uses it:
#
#   cmake -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
#         -DNETMON_ARM64_SYSROOT="$(scripts/arm64-sysroot.sh)"
#
# The BPF objects are compiled by the host's clang for the BPF target as on x86_64, with
# __TARGET_ARCH_arm64 and the sysroot's headers (bpf/CMakeLists.txt).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# Try-compiles get the sysroot too (CMake passes only listed variables to them).
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES NETMON_ARM64_SYSROOT)
if(NOT NETMON_ARM64_SYSROOT)
  set(NETMON_ARM64_SYSROOT "$ENV{NETMON_ARM64_SYSROOT}")
endif()
if(NOT IS_DIRECTORY "${NETMON_ARM64_SYSROOT}/usr/include/aarch64-linux-gnu")
  message(FATAL_ERROR "NETMON_ARM64_SYSROOT (${NETMON_ARM64_SYSROOT}) is not an arm64 sysroot: "
                      "pass -DNETMON_ARM64_SYSROOT=\"$(scripts/arm64-sysroot.sh)\"")
endif()
set(CMAKE_SYSROOT "${NETMON_ARM64_SYSROOT}")
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

# Programs from this machine; headers, libraries and CMake packages from the sysroot only.
set(CMAKE_FIND_ROOT_PATH "${NETMON_ARM64_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# pkg-config reads the sysroot's .pc files and prefixes their paths with it.
set(ENV{PKG_CONFIG_DIR} "")
set(ENV{PKG_CONFIG_LIBDIR}
    "${NETMON_ARM64_SYSROOT}/usr/lib/aarch64-linux-gnu/pkgconfig:${NETMON_ARM64_SYSROOT}/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${NETMON_ARM64_SYSROOT}")
