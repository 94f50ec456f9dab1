#!/bin/sh
# Turns core/include/sluice.h into lua/sluice/core_h.lua (ffi.cdef text).
set -e
echo '-- generated from core/include/sluice.h by core/gen_cdefs.sh: do not edit'
echo 'return [['
sed -e '/^#/d' -e 's/SL_API //' "$1"
echo ']]'
