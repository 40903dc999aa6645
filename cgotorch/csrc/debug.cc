// Test hooks for the shim's error paths.
#include "common.h"

namespace cgt {
thread_local int tl_fail_wrap = 0;
}  // namespace cgt

extern "C" void cgt_debug_fail_handle_alloc(int32_t n) noexcept { cgt::tl_fail_wrap = n > 0 ? n : 0; }
