/*
 * sanitizer.h — which sanitizer this translation unit is built with, in a
 * way that works for both gcc (__SANITIZE_*__) and clang (__has_feature).
 */
#ifndef WEFT_SANITIZER_H
#define WEFT_SANITIZER_H

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define WEFT_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(WEFT_ASAN)
#define WEFT_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__) && !defined(WEFT_TSAN)
#define WEFT_TSAN 1
#endif

#endif
