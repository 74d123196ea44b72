/* Shared by the C sources of subnetscope._native (see _native.c). */
#ifndef SUBNETSCOPE_NATIVE_H
#define SUBNETSCOPE_NATIVE_H

#include <stdint.h>
#include <string.h>

/* each hot loop is compiled for baseline x86-64, AVX2 and AVX-512; the loader picks one for the CPU */
#if defined(SS_CLONES)
/* set by the build */
#elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SS_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define SS_CLONES
#endif

#if defined(_WIN32)
#define SS_EXPORT __declspec(dllexport)
#else
#define SS_EXPORT __attribute__((visibility("default")))
#endif

#endif
