#!/usr/bin/env bash
# What `make build GPU=vulkan` needs: glslc (shaderc), SPIR-V's headers, and the Vulkan loader and headers, the headers new
# enough for this llama.cpp; with --lavapipe also Mesa's software driver, which the device tests run on.
#
# Installs Debian's packages where it can (as root, with apt), else says exactly what is missing. Debian 12's
# headers (1.3.239) lack VK_EXT_layer_settings, which ggml-vulkan uses at this llama.cpp commit (compile
# error: 'LayerSettingEXT' is not a member of 'vk'); then Debian 13's header package (1.4.309, sha256
# pinned) is unpacked into build/vulkan-headers, and the Makefile points CMake at it. The loader library
# stays the system's: ggml-vulkan resolves the functions it uses at run time.
set -euo pipefail

HEADERS_DEB=libvulkan-dev_1.4.309.0-1_amd64.deb
HEADERS_URL=http://deb.debian.org/debian/pool/main/v/vulkan-loader/$HEADERS_DEB
HEADERS_SHA256=8d329d465e16168afff58b1bd0dd6db46aac2cc3f56054a481b25a04e90b345a
OUT=build/vulkan-headers

packages=()
command -v glslc >/dev/null 2>&1 || packages+=(glslc)
[ -e /usr/include/vulkan/vulkan_core.h ] || packages+=(libvulkan-dev)
# ggml-vulkan's CMake asks for SPIRV-Headers' package config (find_package(SPIRV-Headers CONFIG REQUIRED))
[ -e /usr/share/cmake/SPIRV-Headers/SPIRV-HeadersConfig.cmake ] || packages+=(spirv-headers)
if [ "${1:-}" = --lavapipe ]; then
    ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || packages+=(mesa-vulkan-drivers)
fi
if [ ${#packages[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${packages[*]} (Debian packages)" >&2
        apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null \
            || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null; }
    else
        echo "GPU=vulkan needs ${packages[*]}: sudo apt-get install ${packages[*]} (Debian, Ubuntu), or the" \
             "Vulkan SDK (https://vulkan.lunarg.com)" >&2
        exit 2
    fi
fi

if grep -q VK_EXT_layer_settings /usr/include/vulkan/vulkan_core.h; then
    exit 0                      # the system's headers will do
fi
if [ -e "$OUT/include/vulkan/vulkan_core.h" ]; then
    exit 0
fi
case "$(uname -m)" in
    x86_64) ;;
    *) echo "the system's Vulkan headers are too old for this llama.cpp (no VK_EXT_layer_settings):" \
            "install Vulkan-Headers >= 1.3.261 (or the Vulkan SDK)" >&2; exit 2 ;;
esac
echo "the system's Vulkan headers are too old (no VK_EXT_layer_settings): fetching Debian 13's into $OUT" >&2
mkdir -p "$OUT"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL --retry 3 -o "$tmp/$HEADERS_DEB" "$HEADERS_URL"
echo "$HEADERS_SHA256  $tmp/$HEADERS_DEB" | sha256sum -c --quiet -
dpkg-deb -x "$tmp/$HEADERS_DEB" "$tmp/root"
rm -rf "$OUT/include"
cp -r "$tmp/root/usr/include" "$OUT/include"
