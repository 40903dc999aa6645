// Distributed: c10d's TCPStore and its Gloo/NCCL process groups behind the C
// ABI, for data-parallel training (stores, all-reduce, broadcast, barrier,
// and an all-reduce autograd differentiates through).
//
// Version notes (binding.md §7): in libtorch 1.x a backend such as
// ProcessGroupGloo derives from c10d::ProcessGroup; from 2.0 on it derives
// from c10d::Backend (ProcessGroup became a dispatching wrapper). The shim
// calls the backend directly, so only the base class name differs. The
// backends' headers are compiled only with USE_C10D_GLOO / USE_C10D_NCCL
// defined, and need gloo's (libgloo-dev) and NCCL's headers: without them the
// library still builds and cgt_dist_backend_available says 0.
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/exception.h>

#if __has_include(<gloo/config.h>)
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#define CGT_HAVE_GLOO 1
#endif

#if defined(CGT_WITH_CUDA) && __has_include(<nccl.h>) && \
    __has_include(<torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>)
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#define CGT_HAVE_NCCL 1
#endif

#include <algorithm>
#include <cctype>
#include <chrono>
#include <memory>

#include "common.h"

using cgt::T;

namespace {

#if CGT_TORCH_AT_LEAST(2, 0)
using BackendBase = c10d::Backend;
#else
using BackendBase = c10d::ProcessGroup;
#endif

std::atomic<int64_t> g_live_dist{0};

// The group's state, shared with autograd nodes that outlive the handle.
struct Group {
  c10::intrusive_ptr<BackendBase> pg;
  c10::intrusive_ptr<c10d::Store> store;
  int size = 1;
  c10::Device device{c10::kCPU};
  std::chrono::milliseconds timeout{0};
};

bool contains_ci(const std::string &hay, const char *needle) {
  std::string h(hay), n(needle);
  std::transform(h.begin(), h.end(), h.begin(), [](unsigned char c) { return std::tolower(c); });
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::tolower(c); });
  return h.find(n) != std::string::npos;
}

// classify turns an exception from a store or collective into a dist_error
// (timeouts apart from other failures); OOM and argument errors keep their
// own codes. Call from a catch block.
[[noreturn]] void rethrow_classified(const char *op) {
  try {
    throw;
  } catch (const cgt::dist_error &) {
    throw;
  } catch (const cgt::invalid &) {
    throw;
  } catch (const cgt::no_cuda &) {
    throw;
  } catch (const c10::OutOfMemoryError &) {
    throw;
  } catch (const c10d::TimeoutError &e) {
    throw cgt::dist_error(CGT_ERR_DIST_TIMEOUT, std::string(op) + ": " + e.what());
  } catch (const c10::Error &e) {
    const char *m = e.what_without_backtrace();
    if (cgt::is_oom_message(m)) throw;
    const bool timeout = contains_ci(m, "timed out") || contains_ci(m, "timeout");
    throw cgt::dist_error(timeout ? CGT_ERR_DIST_TIMEOUT : CGT_ERR_DIST, std::string(op) + ": " + m);
  } catch (const std::bad_alloc &) {
    throw;
  } catch (const std::exception &e) {
    // gloo::IoException ("Connection closed by peer", "Timed out waiting
    // ... for recv"), socket errors of the store, ...
    const std::string m = e.what();
    const bool timeout = contains_ci(m, "timed out") || contains_ci(m, "timeout");
    throw cgt::dist_error(timeout ? CGT_ERR_DIST_TIMEOUT : CGT_ERR_DIST, std::string(op) + ": " + m);
  }
}

// wait blocks until w completes; the slack lets the backend's own timeout
// (with its better message) fire first.
void wait(const c10::intrusive_ptr<c10d::Work> &w, const Group &g) {
  w->wait(g.timeout + std::chrono::milliseconds(5000));
}

void check_tensor(const Group &g, const at::Tensor &t, const char *op) {
  if (!t.is_contiguous())
    throw cgt::invalid(std::string(op) + ": the tensor must be contiguous");
  if (t.device().type() != g.device.type() ||
      (t.is_cuda() && t.device().index() != g.device.index()))
    throw cgt::invalid(std::string(op) + ": the tensor is on " + t.device().str() +
                       ", the process group on " + g.device.str());
}

// live returns the group's backend, or throws once the handle was freed
// (an autograd node may outlive it).
BackendBase &live(const Group &g, const char *op) {
  if (!g.pg) throw cgt::dist_error(CGT_ERR_DIST, std::string(op) + ": the process group was closed");
  return *g.pg;
}

void all_reduce_sum(const Group &g, at::Tensor &t, const char *op) {
  check_tensor(g, t, op);
  BackendBase &pg = live(g, op);
  std::vector<at::Tensor> ts{t};
  try {
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    wait(pg.allreduce(ts, o), g);
  } catch (...) {
    rethrow_classified(op);
  }
}

// The backward of cgt_all_reduce_sum_autograd: d(sum over ranks)/dx_r is
// the sum over ranks of the incoming gradients.
struct AllReduceSumBackward : torch::autograd::Node {
  std::shared_ptr<Group> g;
  explicit AllReduceSumBackward(std::shared_ptr<Group> grp) : g(std::move(grp)) {}
  torch::autograd::variable_list apply(torch::autograd::variable_list &&grads) override {
    at::Tensor gr = grads.at(0);
    if (!gr.defined()) return {gr};
    at::Tensor out = gr.detach().contiguous().clone();
    all_reduce_sum(*g, out, "all_reduce_sum_autograd backward");
    return {out};
  }
  std::string name() const override { return "AllReduceSumBackward"; }
};

std::chrono::milliseconds ms(int64_t v) { return std::chrono::milliseconds(v); }

}  // namespace

struct cgt_store_s {
  c10::intrusive_ptr<c10d::Store> store;   // what the group uses (maybe prefixed)
  c10::intrusive_ptr<c10d::TCPStore> tcp;  // the connection / server
};

struct cgt_process_group_s {
  std::shared_ptr<Group> g;
};

namespace {

cgt_store_s &S(cgt_store s) {
  if (s == nullptr || !s->store) throw cgt::invalid("nil store handle");
  return *s;
}

Group &G(cgt_process_group g) {
  if (g == nullptr || !g->g) throw cgt::invalid("nil process group handle");
  return *g->g;
}

std::string key_of(const char *key) {
  if (key == nullptr || *key == '\0') throw cgt::invalid("empty store key");
  return key;
}

}  // namespace

extern "C" {

cgt_status cgt_tcp_store_new(cgt_tcp_store_options o, cgt_store *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  if (o.host == nullptr || *o.host == '\0') throw cgt::invalid("TCPStore: empty host");
  if (o.port < 0 || o.port > 65535 || (o.port == 0 && !o.is_server))
    throw cgt::invalid("TCPStore: port must be in 1..65535 (0 only for a server)");
  if (o.timeout_ms <= 0) throw cgt::invalid("TCPStore: timeout must be positive");
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(o.port);
  so.isServer = o.is_server != 0;
  // With wait_workers every process registers itself (a client) and the
  // server's constructor returns once world_size have (PyTorch's
  // wait_for_workers); a client that does not register leaves the server
  // waiting until its timeout.
  if (o.world_size > 0) so.numWorkers = static_cast<std::size_t>(o.world_size);
  so.waitWorkers = o.wait_workers != 0 && o.world_size > 0;
  so.timeout = ms(o.timeout_ms);
#if CGT_TORCH_AT_LEAST(2, 0)
  so.multiTenant = true;
#endif
#if CGT_TORCH_AT_LEAST(2, 4)
  // The classic socket backend: the libuv one is optional in builds.
  so.useLibUV = false;
#endif
  auto h = std::make_unique<cgt_store_s>();
  try {
    h->tcp = c10::make_intrusive<c10d::TCPStore>(std::string(o.host), so);
  } catch (...) {
    rethrow_classified("TCPStore");
  }
  h->store = h->tcp;
  if (o.prefix != nullptr && *o.prefix != '\0')
    h->store = c10::make_intrusive<c10d::PrefixStore>(std::string(o.prefix), h->store);
  *out = h.release();
  g_live_dist.fetch_add(1, std::memory_order_relaxed);
  CGT_CATCH
}

void cgt_store_free(cgt_store s) noexcept {
  if (s == nullptr) return;
  try {
    delete s;
  } catch (...) {
  }
  g_live_dist.fetch_sub(1, std::memory_order_relaxed);
}

cgt_status cgt_store_port(cgt_store s, int32_t *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  *out = static_cast<int32_t>(S(s).tcp->getPort());
  CGT_CATCH
}

cgt_status cgt_store_set(cgt_store s, const char *key, const void *value, int64_t n) noexcept {
  CGT_TRY
  if (n < 0 || (n > 0 && value == nullptr)) throw cgt::invalid("store set: bad value");
  const auto *p = static_cast<const uint8_t *>(value);
  std::vector<uint8_t> v(p, p + n);
  auto &h = S(s);
  std::string k = key_of(key);
  try {
    h.store->set(k, v);
  } catch (...) {
    rethrow_classified("store set");
  }
  CGT_CATCH
}

cgt_status cgt_store_get(cgt_store s, const char *key, void **value, int64_t *n) noexcept {
  CGT_TRY
  if (value == nullptr || n == nullptr) throw cgt::invalid("nil out pointer");
  auto &h = S(s);
  std::string k = key_of(key);
  std::vector<uint8_t> v;
  try {
    v = h.store->get(k);
  } catch (...) {
    rethrow_classified("store get");
  }
  void *p = std::malloc(v.empty() ? 1 : v.size());
  if (p == nullptr) throw std::bad_alloc();
  if (!v.empty()) std::memcpy(p, v.data(), v.size());
  *value = p;
  *n = static_cast<int64_t>(v.size());
  CGT_CATCH
}

cgt_status cgt_store_add(cgt_store s, const char *key, int64_t delta, int64_t *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  auto &h = S(s);
  std::string k = key_of(key);
  try {
    *out = h.store->add(k, delta);
  } catch (...) {
    rethrow_classified("store add");
  }
  CGT_CATCH
}

int32_t cgt_dist_backend_available(int32_t backend) noexcept {
  switch (backend) {
#ifdef CGT_HAVE_GLOO
    case CGT_BACKEND_GLOO: return 1;
#endif
#ifdef CGT_HAVE_NCCL
    case CGT_BACKEND_NCCL: return 1;
#endif
    default: return 0;
  }
}

cgt_status cgt_process_group_new(cgt_store s, cgt_process_group_options o,
                                 cgt_process_group *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  auto &st = S(s);
  if (o.size < 1 || o.rank < 0 || o.rank >= o.size)
    throw cgt::invalid("process group: need 0 <= rank < size, got rank " + std::to_string(o.rank) +
                       " of " + std::to_string(o.size));
  if (o.timeout_ms <= 0) throw cgt::invalid("process group: timeout must be positive");
  auto g = std::make_shared<Group>();
  g->store = st.store;
  g->size = o.size;
  g->timeout = ms(o.timeout_ms);
  g->device = cgt::device(o.device);
  switch (o.backend) {
    case CGT_BACKEND_GLOO: {
#ifdef CGT_HAVE_GLOO
      if (!g->device.is_cpu()) throw cgt::invalid("process group: Gloo here takes CPU tensors");
      auto opts = c10d::ProcessGroupGloo::Options::create(g->timeout);
      try {
        if (o.iface != nullptr && *o.iface != '\0')
          opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(o.iface));
        else
          opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
        g->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(st.store, o.rank, o.size, opts);
      } catch (...) {
        rethrow_classified("process group (gloo)");
      }
#else
      throw cgt::invalid(
          "process group: this libcgotorch was built without Gloo's headers (install libgloo-dev "
          "and rebuild: make shim)");
#endif
      break;
    }
    case CGT_BACKEND_NCCL: {
#ifdef CGT_HAVE_NCCL
      if (!g->device.is_cuda()) throw cgt::invalid("process group: NCCL takes CUDA tensors");
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = g->timeout;
      try {
        g->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(st.store, o.rank, o.size, opts);
      } catch (...) {
        rethrow_classified("process group (nccl)");
      }
#else
      throw cgt::no_cuda(
          "process group: NCCL needs the CUDA flavour of libcgotorch built with NCCL's headers");
#endif
      break;
    }
    default:
      throw cgt::invalid("process group: unknown backend " + std::to_string(o.backend));
  }
  *out = new cgt_process_group_s{std::move(g)};
  g_live_dist.fetch_add(1, std::memory_order_relaxed);
  CGT_CATCH
}

void cgt_process_group_free(cgt_process_group g) noexcept {
  if (g == nullptr) return;
  try {
    // Leave the group now (its connections close, so peers blocked in a
    // collective with this rank fail at once), even if autograd nodes
    // still hold the shared state: they then fail with CGT_ERR_DIST.
    if (g->g) {
      g->g->pg.reset();
      g->g->store.reset();
    }
    delete g;
  } catch (...) {
  }
  g_live_dist.fetch_sub(1, std::memory_order_relaxed);
}

cgt_status cgt_all_reduce_(cgt_process_group h, cgt_tensor t, int32_t op) noexcept {
  CGT_TRY
  auto &g = G(h);
  at::Tensor &x = T(t);
  if (op != CGT_REDUCE_SUM && op != CGT_REDUCE_AVG) throw cgt::invalid("all_reduce: unknown op");
  c10::NoGradGuard ng;
  all_reduce_sum(g, x, "all_reduce");
  // Gloo has no AVG; the same sum-then-divide on every backend keeps results
  // identical across them.
  if (op == CGT_REDUCE_AVG) x.div_(g.size);
  CGT_CATCH
}

cgt_status cgt_broadcast_(cgt_process_group h, cgt_tensor t, int32_t root) noexcept {
  CGT_TRY
  auto &g = G(h);
  at::Tensor &x = T(t);
  if (root < 0 || root >= g.size) throw cgt::invalid("broadcast: root out of range");
  check_tensor(g, x, "broadcast");
  c10::NoGradGuard ng;
  std::vector<at::Tensor> ts{x};
  BackendBase &pg = live(g, "broadcast");
  try {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.rootTensor = 0;
    wait(pg.broadcast(ts, o), g);
  } catch (...) {
    rethrow_classified("broadcast");
  }
  CGT_CATCH
}

cgt_status cgt_barrier(cgt_process_group h) noexcept {
  CGT_TRY
  auto &g = G(h);
  // An all-reduce of one element that the host then reads: a barrier with
  // the same timeout and error semantics on every backend.
  at::Tensor one = at::ones({1}, at::TensorOptions().dtype(at::kFloat).device(g.device));
  all_reduce_sum(g, one, "barrier");
  const double n = one.item<double>();
  if (n != g.size)
    throw cgt::dist_error(CGT_ERR_DIST, "barrier: " + std::to_string(static_cast<int>(n)) + " of " +
                                            std::to_string(g.size) + " ranks answered");
  CGT_CATCH
}

cgt_status cgt_all_reduce_sum_autograd(cgt_process_group h, cgt_tensor t, cgt_tensor *out) noexcept {
  CGT_TRY
  if (out == nullptr) throw cgt::invalid("nil out pointer");
  std::shared_ptr<Group> g = h == nullptr ? nullptr : h->g;
  if (!g) throw cgt::invalid("nil process group handle");
  at::Tensor x = T(t);
  at::Tensor y;
  {
    c10::NoGradGuard ng;
    y = x.detach().contiguous().clone();
    all_reduce_sum(*g, y, "all_reduce_sum_autograd");
  }
  if (x.requires_grad() && c10::GradMode::is_enabled()) {
    auto node = std::shared_ptr<AllReduceSumBackward>(new AllReduceSumBackward(g),
                                                      torch::autograd::deleteNode);
    node->set_next_edges(torch::autograd::collect_next_edges(x));
    torch::autograd::set_history(y, node);
  }
  cgt::set_out(out, std::move(y));
  CGT_CATCH
}

int64_t cgt_dist_live_handles(void) noexcept { return g_live_dist.load(std::memory_order_relaxed); }

}  // extern "C"
