// tools/cudasim/runtime.cpp: libccnsim_rt.so, the CUDA runtime and the cuBLAS v2 calls ccn
// uses, run on the CPU, so that the CUDA backend's kernels and its host code run and are
// tested on machines without a GPU (tools/cudasim/README.md).
//
// What it models, to make the mistakes a GPU punishes show up here too:
// - Streams run lazily: work waits in its stream's queue until something forces it (a
//   synchronisation, an event it must wait for, a copy into pageable host memory). A missing
//   cudaStreamWaitEvent or synchronisation therefore reads stale data every time, where a GPU
//   would only sometimes.
// - Device memory is its own mmap with a guard page after its end, filled with NaN (0xFF)
//   bytes when allocated, and readable only while device work runs: host code touching
//   device memory, a kernel reading past an allocation, and a value read before it was
//   written all show.
// - A kernel fault (SIGSEGV inside a kernel) becomes cudaErrorIllegalAddress at the next
//   checked call, with a report on stderr naming the kernel, its launch site, the block and
//   thread, and the allocation nearest the address.
// - Launch configurations are checked against the limits of sm_90 (cudaErrorInvalidConfiguration).
// - __syncthreads(): a block's threads run as fibers that all meet at each barrier; a block
//   where some threads return while others wait at a barrier is reported.
// - cuBLAS sgemm checks its arguments as cuBLAS does and that every matrix lies inside one
//   device allocation (the product itself is the CPU BLAS's).
// - Cross-stream hazards: two ops on different streams touching one allocation with nothing
//   ordering them (vector clocks over events, waits and host synchronisations) are reported.
// Not modelled: races between threads of a kernel (CCNSIM_ORDER=reverse shows some), timing,
// memory limits of a real device (tools/cudasim/README.md has the full list).
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

// sgemm itself comes from the CPU BLAS ccn is built with (the column-major call is cuBLAS's).
#if defined(CCN_BLAS_SCIPY_OPENBLAS)
#include <cblas.h>
#define CCNSIM_SGEMM scipy_cblas_sgemm
#elif defined(CCN_BLAS_MKL)
#include <mkl.h>
#define CCNSIM_SGEMM cblas_sgemm
#else
#include <cblas.h>
#define CCNSIM_SGEMM cblas_sgemm
#endif

extern "C" {
uint3 ccnsim_threadIdx, ccnsim_blockIdx;
dim3 ccnsim_blockDim, ccnsim_gridDim;
}

struct CUstream_st;
struct CUevent_st;

namespace {

std::recursive_mutex g_mu;
using Lock = std::lock_guard<std::recursive_mutex>;

const size_t kPage = 4096;
const size_t kAlign = 256;

// ---- device memory ---------------------------------------------------------------
struct Alloc {
  char* map = nullptr;   // whole mapping: guard page, data pages, guard page
  size_t map_len = 0;
  char* pages = nullptr;  // the data pages
  size_t pages_len = 0;
  char* p = nullptr;      // what cudaMalloc returned
  size_t bytes = 0;
  unsigned long serial = 0;
};
std::map<uintptr_t, Alloc> g_dev;  // by p
std::map<uintptr_t, size_t> g_pinned;
unsigned long g_serial = 0;
size_t g_dev_bytes = 0;
bool g_open = false;  // device memory readable (device work running)
const size_t kTotalMem = size_t(16) << 30;

void set_device_access(bool on) {
  if (on == g_open) return;
  for (auto& kv : g_dev) mprotect(kv.second.pages, kv.second.pages_len, on ? PROT_READ | PROT_WRITE : PROT_NONE);
  g_open = on;
}

// The allocation p points into, up to one past its end, or null.
const Alloc* alloc_of(const void* p) {
  auto it = g_dev.upper_bound((uintptr_t)p);
  if (it == g_dev.begin()) return nullptr;
  --it;
  return (const char*)p <= it->second.p + it->second.bytes ? &it->second : nullptr;
}
// The allocation holding [p, p + n), or null.
const Alloc* dev_range(const void* p, size_t n) {
  const Alloc* a = alloc_of(p);
  return a && (const char*)p + n <= a->p + a->bytes ? a : nullptr;
}
// The allocation whose mapping holds p (for fault reports), or null.
const Alloc* near_alloc(const void* p) {
  for (auto& kv : g_dev)
    if ((const char*)p >= kv.second.map && (const char*)p < kv.second.map + kv.second.map_len) return &kv.second;
  return nullptr;
}
bool is_pinned(const void* p, size_t n) {
  auto it = g_pinned.upper_bound((uintptr_t)p);
  if (it == g_pinned.begin()) return false;
  --it;
  return (uintptr_t)p + n <= it->first + it->second;
}
bool touches_device(const void* p, size_t n) {
  auto it = g_dev.lower_bound((uintptr_t)p + n);
  if (it == g_dev.begin()) return false;
  --it;
  return (uintptr_t)p < (uintptr_t)(it->second.p + it->second.bytes);
}

// ---- errors --------------------------------------------------------------------------
cudaError_t g_last = cudaSuccess;    // cleared by cudaGetLastError
cudaError_t g_sticky = cudaSuccess;  // a fault: returned by the calls that wait for work
cudaError_t note(cudaError_t e) {
  if (e != cudaSuccess) g_last = e;
  return e;
}

// ---- streams, events and the work in them ------------------------------------------
// Happens-before, to name cross-stream hazards: a vector clock holds, per stream id, how many
// of that stream's ops are ordered before a point (an op, a stream's tail, an event, the host).
using VC = std::vector<unsigned long>;
void join(VC& a, const VC& b) {
  if (a.size() < b.size()) a.resize(b.size(), 0);
  for (size_t i = 0; i < b.size(); ++i) a[i] = std::max(a[i], b[i]);
}
unsigned long at(const VC& v, int sid) { return (size_t)sid < v.size() ? v[sid] : 0; }

struct Op {
  enum Kind { Kernel, Copy, Set, Marker, Wait, Task } kind;
  std::function<void()> body;  // Kernel: one thread; Task: the whole op
  std::string name, where;
  bool fibers = false;
  dim3 grid, block;
  void* dst = nullptr;
  const void* src = nullptr;
  size_t n = 0;
  int value = 0;
  std::vector<char> staged;  // Copy from pageable host memory: the bytes, taken at the call
  std::string bad;           // Kernel: why it faults as soon as it runs (a host pointer argument)
  CUevent_st* ev = nullptr;
  unsigned long record_no = 0;  // Marker: which record of ev it is
  CUstream_st* wait_stream = nullptr;
  unsigned long wait_seq = 0;
  unsigned long issue = 0;  // order of issue over all streams
  int sid = 0;                // its stream's id
  unsigned long seq = 0;      // its number on that stream (1-based)
  VC vc;                      // what is ordered before it
  VC wait_vc;                 // Wait: the event's clock
  std::vector<std::pair<const void*, bool>> acc;  // device memory it reads (false) or writes (true)
};

}  // namespace

// Destroyed streams and events are never freed (a queued op may still point at them), only
// taken off the lists of valid handles.
struct CUstream_st {
  std::deque<Op> q;
  unsigned long enqueued = 0, done = 0;
  int sid = 0;  // 0 for stream 0, then in order of creation
  VC vc;        // what is ordered before its next op
};
struct CUevent_st {
  CUstream_st* s = nullptr;  // where it was last recorded (null: never)
  unsigned long seq = 0;     // the op count of s at the latest record
  unsigned long record_no = 0;
  bool done = false, timing = true, polled = false;
  double t_ms = -1;  // when the latest record's marker ran
  VC vc;             // what its latest record waits for
};

namespace {

CUstream_st g_null_stream;
std::set<CUstream_st*> g_streams{&g_null_stream};  // valid handles
std::vector<CUstream_st*> g_all_streams{&g_null_stream};  // destroyed ones too, while work is queued
unsigned long g_issue = 0;
VC g_host_vc;  // what the host has waited for
std::string g_reports;  // every report since the last ccnsim_reset()
std::string g_fault_detail, g_config_detail;  // the latest fault's report, the latest refused launch
// CCNSIM_ORDER=reverse: blocks, and the threads of a block, run in descending order (a kernel
// whose result depends on the order has a race on a GPU).
bool g_reverse = [] {
  const char* o = std::getenv("CCNSIM_ORDER");
  if (!o || !*o || !std::strcmp(o, "forward")) return false;
  if (!std::strcmp(o, "reverse")) return true;
  fprintf(stderr, "ccn CUDA simulator: CCNSIM_ORDER=%s is not one of: forward, reverse.\n", o);
  _exit(2);
}();

// cuBLAS in a simulated process is this library's: CCN_CUBLAS names it, whatever it said, so a
// real libcublas never receives the simulator's pointers.
__attribute__((constructor)) void point_cublas_here() {
  Dl_info info;
  if (dladdr((void*)&point_cublas_here, &info) && info.dli_fname) setenv("CCN_CUBLAS", info.dli_fname, 1);
}
std::set<CUevent_st*> g_events;
CUstream_st* S(cudaStream_t s) { return s ? s : &g_null_stream; }

// ---- kernels: blocks one after another, threads in order or as fibers --------------
// One fiber per thread of a block. On x86-64 a switch saves the callee-saved registers and
// swaps stack pointers (ucontext's swapcontext makes a system call per switch, which made the
// kernels with barriers 20x slower); elsewhere ucontext.
struct Fiber {
  char* stack = nullptr;  // kFiberStack bytes above a guard page (mmap)
  int state = 0;  // 0 runnable, 1 at a barrier, 2 returned
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t ctx;
#endif
};
std::vector<Fiber> g_fibers;
int g_cur = -1;
const std::function<void()>* g_body = nullptr;
bool g_fiber_mode = false;
const size_t kFiberStack = 256 * 1024;

sigjmp_buf g_fault_jmp;
volatile sig_atomic_t g_in_device_op = 0;
void* g_fault_addr = nullptr;
std::string g_fault_what;

#if defined(__x86_64__)
extern "C" void ccnsim_switch(void** save_sp, void* to_sp);
asm(R"(
.text
.p2align 4
.globl ccnsim_switch
.hidden ccnsim_switch
.type ccnsim_switch,@function
ccnsim_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size ccnsim_switch, .-ccnsim_switch
)");
void* g_sched_sp = nullptr;

extern "C" [[noreturn]] void ccnsim_fiber_start() {
  (*g_body)();
  g_fibers[g_cur].state = 2;
  ccnsim_switch(&g_fibers[g_cur].sp, g_sched_sp);
  __builtin_unreachable();
}
uint64_t g_fp_control = 0;  // mxcsr | x87 control word << 32, read once per block
void read_fp_control() {
  uint32_t mx;
  uint16_t cw;
  asm volatile("stmxcsr %0" : "=m"(mx));
  asm volatile("fnstcw %0" : "=m"(cw));
  g_fp_control = (uint64_t)mx | ((uint64_t)cw << 32);
}
void fiber_prepare(Fiber& f) {
  // The stack as ccnsim_switch leaves it: control word slot, six registers, then the address
  // it "returns" to; after that ret, rsp is 8 mod 16 as at any function's entry.
  uintptr_t top = ((uintptr_t)(f.stack + kFiberStack)) & ~(uintptr_t)15;
  uint64_t* sp = (uint64_t*)top;
  *--sp = 0;                                   // fake return address of ccnsim_fiber_start
  *--sp = (uint64_t)(void*)&ccnsim_fiber_start;
  for (int r = 0; r < 6; ++r) *--sp = 0;       // rbp rbx r12 r13 r14 r15
  *--sp = g_fp_control;
  f.sp = sp;
}
void fiber_resume(Fiber& f) { ccnsim_switch(&g_sched_sp, f.sp); }
void fiber_yield(Fiber& f) { ccnsim_switch(&f.sp, g_sched_sp); }
#else
ucontext_t g_sched;
void fiber_entry() {
  (*g_body)();
  g_fibers[g_cur].state = 2;  // uc_link resumes the scheduler
}
void fiber_prepare(Fiber& f) {
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack;
  f.ctx.uc_stack.ss_size = kFiberStack;
  f.ctx.uc_link = &g_sched;
  makecontext(&f.ctx, fiber_entry, 0);
}
void read_fp_control() {}
void fiber_resume(Fiber& f) { swapcontext(&g_sched, &f.ctx); }
void fiber_yield(Fiber& f) { swapcontext(&f.ctx, &g_sched); }
#endif

void set_thread(unsigned t, dim3 b) {
  ccnsim_threadIdx = uint3{t % b.x, (t / b.x) % b.y, t / (b.x * b.y)};
}

[[noreturn]] void kernel_error(const std::string& what) {
  g_fault_what = what;
  siglongjmp(g_fault_jmp, 2);
}

// Block-shared arrays seen so far (ccnsim_shared): NaN bytes before each block that has barriers.
std::map<void*, size_t> g_shared;
void fill_shared() {
  for (auto& kv : g_shared) std::memset(kv.first, 0xFF, kv.second);
}

void run_block_fibers(const Op& op, unsigned nthreads) {
  fill_shared();
  if (g_fibers.size() < nthreads) g_fibers.resize(nthreads);
  read_fp_control();
  for (unsigned t = 0; t < nthreads; ++t) {
    Fiber& f = g_fibers[t];
    if (!f.stack) {
      char* m = (char*)mmap(nullptr, kFiberStack + kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (m == MAP_FAILED) kernel_error("no memory for the fiber stacks of a block");
      mprotect(m, kPage, PROT_NONE);  // a thread that overflows its stack faults
      f.stack = m + kPage;
    }
    fiber_prepare(f);
    f.state = 0;
  }
  g_fiber_mode = true;
  unsigned returned = 0;
  for (;;) {  // one barrier phase a pass
    unsigned waiting = 0;
    for (unsigned i = 0; i < nthreads; ++i) {
      const unsigned t = g_reverse ? nthreads - 1 - i : i;
      Fiber& f = g_fibers[t];
      if (f.state == 2) continue;
      f.state = 0;
      set_thread(t, op.block);
      g_cur = (int)t;
      fiber_resume(f);
      if (f.state == 2)
        ++returned;
      else
        ++waiting;
    }
    if (waiting == 0) break;
    if (returned > 0) {
      g_fiber_mode = false;
      kernel_error("barrier divergence: in block (" + std::to_string(ccnsim_blockIdx.x) + "," +
                   std::to_string(ccnsim_blockIdx.y) + "," + std::to_string(ccnsim_blockIdx.z) + "), " +
                   std::to_string(waiting) + " threads wait at a __syncthreads() that " + std::to_string(returned) +
                   " threads of the block never reach (they returned): undefined behaviour on a GPU");
    }
  }
  g_fiber_mode = false;
}

void run_kernel(const Op& op) {
  ccnsim_gridDim = op.grid;
  ccnsim_blockDim = op.block;
  const unsigned nthreads = op.block.x * op.block.y * op.block.z;
  g_body = &op.body;
  if (!op.bad.empty()) kernel_error(op.bad);
  const unsigned long nblocks = (unsigned long)op.grid.x * op.grid.y * op.grid.z;
  for (unsigned long i = 0; i < nblocks; ++i) {
    const unsigned long b = g_reverse ? nblocks - 1 - i : i;
    ccnsim_blockIdx = uint3{(unsigned)(b % op.grid.x), (unsigned)(b / op.grid.x % op.grid.y),
                            (unsigned)(b / ((unsigned long)op.grid.x * op.grid.y))};
    if (op.fibers) {
      run_block_fibers(op, nthreads);
    } else {
      for (unsigned k = 0; k < nthreads; ++k) {
        set_thread(g_reverse ? nthreads - 1 - k : k, op.block);
        op.body();
      }
    }
  }
}

std::string alloc_text(const Alloc& a) {
  return "device allocation #" + std::to_string(a.serial) + " of " + std::to_string(a.bytes) + " bytes";
}

std::string fault_place(void* addr) {
  char buf[64];
  snprintf(buf, sizeof buf, "%p", addr);
  std::string s = std::string("address ") + buf;
  if (const Alloc* a = near_alloc(addr)) {
    const long off = (long)((char*)addr - a->p);
    if (off < 0)
      s += ", " + std::to_string(-off) + " bytes before the start of " + alloc_text(*a);
    else if (off >= (long)a->bytes)
      s += ", " + std::to_string(off - (long)a->bytes) + " bytes past the end of " + alloc_text(*a);
    else
      s += ", inside " + alloc_text(*a) + " (access while the host runs)";
  } else {
    bool stack = false;
    for (const Fiber& f : g_fibers)
      if (f.stack && (char*)addr >= f.stack - kPage && (char*)addr < f.stack) stack = true;
    s += stack ? ", the guard page below a thread's stack: a kernel thread used more than its " +
                     std::to_string(kFiberStack / 1024) + " KB of stack"
               : ", not near any device allocation (a host pointer given to the device, or a wild pointer)";
  }
  return s;
}

// The bytes between an allocation's end and its guard page (under 256: CUDA's alignment), and
// those in front of it in its first page, hold a canary: in each float a signalling NaN whose
// payload is the allocation's own (so a kernel copying one allocation's canary into another's
// still changes it). A kernel that reads there computes with NaN; one that writes there is
// reported.
uint32_t canary_of(const Alloc& a) {
  return 0x7F800000u | ((uint32_t)(a.serial * 2654435761u) & 0x3FFFFFu) | 1u;  // quiet bit clear, payload != 0
}
unsigned char canary_byte(const Alloc& a, size_t k) { return (unsigned char)(canary_of(a) >> (8 * (k % 4))); }
void fill_slack(Alloc& a) {
  for (char* q = a.p + a.bytes; q < a.pages + a.pages_len; ++q) *q = (char)canary_byte(a, q - (a.p + a.bytes));
  for (char* q = a.pages; q < a.p; ++q) *q = (char)canary_byte(a, q - a.pages);
}
// The allocation whose canary a kernel changed, and where (+1 after the end, -1 before the start).
Alloc* slack_written(int* where) {
  for (auto& kv : g_dev) {
    Alloc& a = kv.second;
    for (const char* q = a.p + a.bytes; q < a.pages + a.pages_len; ++q)
      if ((unsigned char)*q != canary_byte(a, q - (a.p + a.bytes))) return *where = 1, &a;
    for (const char* q = a.pages; q < a.p; ++q)
      if ((unsigned char)*q != canary_byte(a, q - a.pages)) return *where = -1, &a;
  }
  return nullptr;
}

// Per allocation (by serial): the last op that wrote it and the ops that read it since, to
// report two ops on different streams with nothing ordering them (a cross-stream hazard).
struct Access {
  int sid = -1;
  unsigned long seq = 0;
  std::string what;
};
struct Track {
  Access writer;
  std::vector<Access> readers;  // the latest per stream
};
std::map<unsigned long, Track> g_track;

std::string op_label(const Op& op) {
  return op.kind == Op::Kernel ? "kernel " + op.name + " (launched at " + op.where + ")"
                               : op.name + " (" + op.where + ")";
}
std::string op_text(const Op& op) { return op_label(op) + " on stream #" + std::to_string(op.sid); }
// On stderr (with `tail`) and in ccnsim_reports(); returns the report.
std::string report(const std::string& text, const char* tail = "") {
  const std::string r = "ccn CUDA simulator: " + text;
  fprintf(stderr, "%s%s\n", r.c_str(), tail);
  fflush(stderr);
  g_reports += r + "\n";
  return r;
}
void check_hazards(const Op& op) {
  std::map<unsigned long, std::pair<const Alloc*, bool>> touched;  // serial -> (allocation, writes)
  for (auto& a : op.acc)
    if (const Alloc* al = alloc_of(a.first)) {
      auto& t = touched[al->serial];
      t.first = al;
      t.second = t.second || a.second;
    }
  if (touched.empty()) return;
  const std::string me = op_text(op);
  auto unordered = [&](const Access& x) { return x.sid >= 0 && x.sid != op.sid && at(op.vc, x.sid) < x.seq; };
  const char* unordered_text = ", with nothing ordering the two (no event waited for, no synchronisation between them)";
  std::string hazard;
  for (auto& kv : touched) {
    Track& t = g_track[kv.first];
    const std::string mem = alloc_text(*kv.second.first);
    if (hazard.empty() && unordered(t.writer))
      hazard = me + (kv.second.second ? " writes " : " reads ") + mem + ", which " + t.writer.what + " wrote" +
               unordered_text;
    if (kv.second.second) {
      for (const Access& r : t.readers)
        if (hazard.empty() && unordered(r))
          hazard = me + " writes " + mem + ", which " + r.what + " reads" + unordered_text;
      t.writer = Access{op.sid, op.seq, me};
      t.readers.clear();
    } else {
      bool found = false;
      for (Access& r : t.readers)
        if (r.sid == op.sid) r = Access{op.sid, op.seq, me}, found = true;
      if (!found) t.readers.push_back(Access{op.sid, op.seq, me});
    }
  }
  if (!hazard.empty()) report("cross-stream hazard: " + hazard + ".");
}

void drop_all_queues() {
  for (CUstream_st* s : g_all_streams) {
    s->done += s->q.size();
    s->q.clear();
  }
}

void execute(Op& op);

// Runs s's work up to (and including) op number `upto` (1-based count of ops ever enqueued).
// Device memory stays readable for the whole run of work (one mprotect pass, not one per op).
void flush(CUstream_st* s, unsigned long upto) {
  if (s->done >= upto || s->q.empty()) return;
  const bool was_open = g_open;
  set_device_access(true);
  while (s->done < upto && !s->q.empty()) {
    Op op = std::move(s->q.front());
    s->q.pop_front();
    ++s->done;
    execute(op);
  }
  set_device_access(was_open);
}
// Runs everything queued, one op at a time, always the stream whose next op was issued last:
// work on independent streams runs in the order least like issue order.
void flush_all() {
  for (;;) {
    CUstream_st* pick = nullptr;
    for (CUstream_st* s : g_all_streams)
      if (!s->q.empty() && (!pick || s->q.front().issue > pick->q.front().issue)) pick = s;
    if (!pick) return;
    flush(pick, pick->done + 1);
  }
}

void execute(Op& op) {
  if (op.kind == Op::Wait) {
    flush(op.wait_stream, op.wait_seq);
    return;
  }
  if (op.kind == Op::Marker) {
    if (op.record_no == op.ev->record_no) {
      op.ev->t_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
      op.ev->done = true;
    }
    return;
  }
  if (g_sticky != cudaSuccess) return;  // a faulted context runs nothing more
  g_in_device_op = 1;
  const int fault = sigsetjmp(g_fault_jmp, 1);
  if (fault == 0) {
    switch (op.kind) {
      case Op::Kernel: run_kernel(op); break;
      case Op::Task: op.body(); break;
      case Op::Copy: std::memmove(op.dst, op.src, op.n); break;
      case Op::Set: std::memset(op.dst, op.value, op.n); break;
      default: break;
    }
    int where = 0;
    if (op.kind == Op::Kernel || op.kind == Op::Task)
      if (Alloc* a = slack_written(&where)) {
        g_fault_what = where > 0 ? "it wrote past the end of " + alloc_text(*a) +
                                       " (into the bytes before the next 256-byte boundary)"
                                 : "it wrote before the start of " + alloc_text(*a);
        fill_slack(*a);
        siglongjmp(g_fault_jmp, 3);
      }
  } else {
    g_fiber_mode = false;
    std::string what = g_fault_what.empty() ? "illegal memory access at " + fault_place(g_fault_addr) : g_fault_what;
    g_fault_what.clear();
    std::string who = op_label(op);
    // a canary found after the kernel, or a bad argument before it ran: no thread to name
    if (op.kind == Op::Kernel && fault != 3 && op.bad.empty()) {
      auto triple = [](unsigned x, unsigned y, unsigned z) {
        return "(" + std::to_string(x) + "," + std::to_string(y) + "," + std::to_string(z) + ")";
      };
      who += ", block " + triple(ccnsim_blockIdx.x, ccnsim_blockIdx.y, ccnsim_blockIdx.z) + " thread " +
             triple(ccnsim_threadIdx.x, ccnsim_threadIdx.y, ccnsim_threadIdx.z) + " of grid " +
             triple(op.grid.x, op.grid.y, op.grid.z) + " x block " + triple(op.block.x, op.block.y, op.block.z);
    }
    g_fault_detail =
        report(who + ": " + what + ".", " Every later call that waits for device work returns the error.");
    g_sticky = what.rfind("barrier divergence", 0) == 0 ? cudaErrorLaunchFailure : cudaErrorIllegalAddress;
    drop_all_queues();
  }
  g_in_device_op = 0;
}

// ---- SIGSEGV: inside device work a fault of that work, else host code touching device memory
struct sigaction g_old_segv, g_old_bus;
bool g_handler = false;
std::vector<char> g_altstack;

void on_segv(int sig, siginfo_t* si, void* uc) {
  if (g_in_device_op) {
    g_fault_addr = si->si_addr;
    siglongjmp(g_fault_jmp, 1);
  }
  if (const Alloc* a = near_alloc(si->si_addr)) {
    char buf[512];
    long off = (long)((char*)si->si_addr - a->p);
    int n = snprintf(buf, sizeof buf,
                     "ccn CUDA simulator: host code touched device memory at %p (%s, offset %ld): on a GPU this "
                     "pointer is not readable from the host; copy it with cudaMemcpy.\n",
                     si->si_addr, alloc_text(*a).c_str(), off);
    if (n > 0) (void)!write(2, buf, (size_t)std::min(n, (int)sizeof buf - 1));
  }
  sigaction(sig, sig == SIGSEGV ? &g_old_segv : &g_old_bus, nullptr);  // the fault repeats: Python's faulthandler, then death
}

void install_handler() {
  if (g_handler) return;
  g_handler = true;
  g_altstack.resize(1 << 16);
  stack_t ss{};
  ss.ss_sp = g_altstack.data();
  ss.ss_size = g_altstack.size();
  sigaltstack(&ss, nullptr);
  struct sigaction sa {};
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_old_segv);
  sigaction(SIGBUS, &sa, &g_old_bus);
}

void enqueue(CUstream_st* s, Op op) {
  op.issue = ++g_issue;
  op.sid = s->sid;
  op.seq = ++s->enqueued;
  join(s->vc, g_host_vc);  // work issued after the host waited for something comes after it
  if (op.kind == Op::Wait) join(s->vc, op.wait_vc);
  if (s->vc.size() <= (size_t)s->sid) s->vc.resize(s->sid + 1, 0);
  s->vc[s->sid] = op.seq;
  op.vc = s->vc;
  // Checked in issue order, when the op is issued: of two conflicting ops the later-issued one
  // finds the other, whichever would run first.
  check_hazards(op);
  s->q.push_back(std::move(op));
}
void host_waits(const VC& v) { join(g_host_vc, v); }
void host_waits_all() {
  for (CUstream_st* s : g_all_streams) join(g_host_vc, s->vc);
}

const char* error_name(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

// A call that waits for device work returns the fault, from then on (as on a GPU, where the
// context is lost); ccnsim_reset() clears it (tests/conftest.py does, between tests).
cudaError_t waited() { return note(g_sticky); }

// Device memory (up to one past an allocation's end) or pinned host memory, which is mapped
// into the device's address space.
bool device_pointer(const void* p) { return alloc_of(p) || is_pinned(p, 1); }

}  // namespace

// ---- the API ---------------------------------------------------------------------------
bool ccnsim_device_pointer(const void* p) {
  Lock l(g_mu);
  return !p || device_pointer(p);
}

void ccnsim_enqueue_kernel(const char* name, const char* file, int line, bool fibers, dim3 grid, dim3 block,
                           size_t smem, cudaStream_t s, std::function<void()> body, std::string bad,
                           std::vector<std::pair<const void*, bool>> acc) {
  Lock l(g_mu);
  const unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 || block.z == 0 || threads > 1024 ||
      block.x > 1024 || block.y > 1024 || block.z > 64 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535 ||
      smem > 48 * 1024) {
    char buf[400];
    snprintf(buf, sizeof buf,
             "ccn CUDA simulator: kernel %s (launched at %s:%d) refused: grid (%u,%u,%u) x block (%u,%u,%u) = %llu "
             "threads a block, %zu bytes of dynamic shared memory; sm_90 allows up to 1024 threads a block "
             "(x, y <= 1024, z <= 64), grid y and z <= 65535, 48 KB",
             name, file, line, grid.x, grid.y, grid.z, block.x, block.y, block.z, threads, smem);
    g_config_detail = buf;
    note(cudaErrorInvalidConfiguration);
    return;
  }
  if (s && !g_streams.count(s)) {
    note(cudaErrorInvalidResourceHandle);
    return;
  }
  Op op{Op::Kernel};
  op.body = std::move(body);
  op.name = name;
  op.where = std::string(file) + ":" + std::to_string(line);
  op.fibers = fibers;
  op.grid = grid;
  op.block = block;
  if (!bad.empty()) op.bad = "a kernel argument is not a device pointer: " + bad;
  op.acc = std::move(acc);
  enqueue(S(s), std::move(op));
}

extern "C" {

// CCNSIM_MATH: the single-precision math functions of device code (cuda_runtime.h). "faithful"
// (the default) returns either neighbour of the exact result, as a GPU's expf, powf, tanhf,
// logf ... (documented at 1-4 ulp) may; "exact" returns the correctly rounded one (the host's).
int ccnsim_math_faithful = [] {
  const char* o = std::getenv("CCNSIM_MATH");
  if (!o || !*o || !std::strcmp(o, "faithful")) return 1;
  if (!std::strcmp(o, "exact")) return 0;
  fprintf(stderr, "ccn CUDA simulator: CCNSIM_MATH=%s is not one of: faithful, exact.\n", o);
  _exit(2);
}();

void ccnsim_shared(void* p, size_t bytes) {
  if (g_shared.emplace(p, bytes).second) std::memset(p, 0xFF, bytes);  // first sight: this block's threads start after
}

void ccnsim_syncthreads() {
  if (!g_fiber_mode)
    kernel_error("__syncthreads() in a kernel run without fibers (tools/cudasim/transform.py gives fibers to the "
                 "kernels it finds reaching __syncthreads; it missed this one)");
  Fiber& f = g_fibers[g_cur];
  f.state = 1;
  fiber_yield(f);
}

cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (device != 0) return note(cudaErrorInvalidDevice);
  std::memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "ccn CUDA simulator (CPU)");
  p->totalGlobalMem = kTotalMem;
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 132;
  p->maxThreadsPerBlock = 1024;
  p->sharedMemPerBlock = 48 * 1024;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : note(cudaErrorInvalidDevice); }
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  Lock l(g_mu);
  *total_bytes = kTotalMem;
  *free_bytes = kTotalMem - std::min(kTotalMem, g_dev_bytes);
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaGetLastError() {
  Lock l(g_mu);
  cudaError_t e = g_sticky != cudaSuccess ? g_sticky : g_last;
  g_last = cudaSuccess;
  return e;
}

// For tests: forget a fault (a GPU would need a new process) and the reports so far.
void ccnsim_reset() {
  Lock l(g_mu);
  drop_all_queues();
  g_sticky = g_last = cudaSuccess;
  g_reports.clear();
  g_fault_detail.clear();
  g_config_detail.clear();
  g_track.clear();
}
// Every report since the last reset ("" when none).
const char* ccnsim_reports() { return g_reports.c_str(); }
cudaError_t cudaPeekAtLastError() { return g_last; }
const char* cudaGetErrorName(cudaError_t e) { return error_name(e); }
const char* plain_error_string(cudaError_t e);
// With the simulator's own detail of the latest fault or refused launch appended, so that the
// error ccn raises (native/cuda/check.h) carries it.
const char* cudaGetErrorString(cudaError_t e) {
  static std::string text;
  const std::string& detail = e == cudaErrorInvalidConfiguration ? g_config_detail
                              : (e == cudaErrorIllegalAddress || e == cudaErrorLaunchFailure) ? g_fault_detail
                                                                                               : std::string();
  text = plain_error_string(e);
  if (!detail.empty()) text += " [" + detail + "]";
  return text.c_str();
}
const char* plain_error_string(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotReady: return "device not ready";
    default: return error_name(e);
  }
}

cudaError_t cudaMalloc(void** out, size_t bytes) {
  Lock l(g_mu);
  install_handler();
  const size_t want = (std::max<size_t>(bytes, 1) + kAlign - 1) / kAlign * kAlign;
  const size_t pages_len = (want + kPage - 1) / kPage * kPage;
  const size_t map_len = pages_len + 2 * kPage;
  char* m = (char*)mmap(nullptr, map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return note(cudaErrorMemoryAllocation);
  Alloc a;
  a.map = m;
  a.map_len = map_len;
  a.pages = m + kPage;
  a.pages_len = pages_len;
  a.p = a.pages + pages_len - want;  // the end of the allocation touches the guard page
  a.bytes = bytes;
  a.serial = ++g_serial;
  mprotect(a.pages, a.pages_len, PROT_READ | PROT_WRITE);
  std::memset(a.p, 0xFF, bytes);  // NaN in every float: a value read before it is written shows
  fill_slack(a);
  if (!g_open) mprotect(a.pages, a.pages_len, PROT_NONE);
  g_dev[(uintptr_t)a.p] = a;
  g_dev_bytes += bytes;
  *out = a.p;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  Lock l(g_mu);
  if (!p) return cudaSuccess;
  auto it = g_dev.find((uintptr_t)p);
  if (it == g_dev.end()) return note(cudaErrorInvalidDevicePointer);
  flush_all();  // cudaFree waits for the device
  host_waits_all();
  g_track.erase(it->second.serial);
  g_dev_bytes -= it->second.bytes;
  munmap(it->second.map, it->second.map_len);
  g_dev.erase(it);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** out, size_t bytes) {
  Lock l(g_mu);
  void* p = nullptr;
  if (posix_memalign(&p, kPage, std::max<size_t>(bytes, 1)) != 0) return note(cudaErrorMemoryAllocation);
  std::memset(p, 0xFF, std::max<size_t>(bytes, 1));
  g_pinned[(uintptr_t)p] = std::max<size_t>(bytes, 1);
  *out = p;
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* p) {
  Lock l(g_mu);
  if (!p) return cudaSuccess;
  auto it = g_pinned.find((uintptr_t)p);
  if (it == g_pinned.end()) return note(cudaErrorInvalidValue);
  flush_all();
  host_waits_all();
  g_pinned.erase(it);
  free(p);
  return cudaSuccess;
}

static cudaError_t copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s, bool async) {
  if (bytes == 0) return cudaSuccess;
  const bool dst_dev = dev_range(dst, bytes) != nullptr, src_dev = dev_range(src, bytes) != nullptr;
  // A range that starts in device memory but runs past its allocation, or the wrong side for
  // the kind, is an error (CUDA reports cudaErrorInvalidValue).
  if ((!dst_dev && touches_device(dst, bytes)) || (!src_dev && touches_device(src, bytes))) return note(cudaErrorInvalidValue);
  switch (kind) {
    case cudaMemcpyHostToDevice:
      if (!dst_dev || src_dev) return note(cudaErrorInvalidValue);
      break;
    case cudaMemcpyDeviceToHost:
      if (dst_dev || !src_dev) return note(cudaErrorInvalidValue);
      break;
    case cudaMemcpyDeviceToDevice:
      if (!dst_dev || !src_dev) return note(cudaErrorInvalidValue);
      break;
    case cudaMemcpyHostToHost:
      if (dst_dev || src_dev) return note(cudaErrorInvalidValue);
      break;
    case cudaMemcpyDefault: break;
    default: return note(cudaErrorInvalidMemcpyDirection);
  }
  CUstream_st* st = S(s);
  const bool host_side_pageable = (!dst_dev && !is_pinned(dst, bytes)) || (!src_dev && !is_pinned(src, bytes));
  Op op{Op::Copy};
  op.dst = dst;
  op.src = src;
  op.n = bytes;
  op.name = async ? "cudaMemcpyAsync" : "cudaMemcpy";
  op.where = "a copy of " + std::to_string(bytes) + " bytes";
  if (src_dev) op.acc.emplace_back(src, false);
  if (dst_dev) op.acc.emplace_back(dst, true);
  if (async && !host_side_pageable) {  // pinned host memory or device to device: runs in stream order, later
    enqueue(st, std::move(op));
    return cudaSuccess;
  }
  if (async && kind != cudaMemcpyDeviceToHost && dst_dev) {
    // From pageable host memory: the bytes are staged now (the caller may reuse its buffer),
    // the copy runs in stream order, later.
    op.staged.assign((const char*)src, (const char*)src + bytes);
    op.src = op.staged.data();
    enqueue(st, std::move(op));
    return cudaSuccess;
  }
  // Into pageable host memory (or cudaMemcpy): the copy is done when the call returns, after
  // the stream's earlier work.
  flush(st, st->enqueued);
  enqueue(st, std::move(op));
  flush(st, st->enqueued);
  host_waits(st->vc);
  return async ? cudaSuccess : waited();
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  Lock l(g_mu);
  return copy(dst, src, bytes, kind, nullptr, false);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s) {
  Lock l(g_mu);
  if (s && !g_streams.count(s)) return note(cudaErrorInvalidResourceHandle);
  return copy(dst, src, bytes, kind, s, true);
}
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t s) {
  Lock l(g_mu);
  if (bytes == 0) return cudaSuccess;
  if (!dev_range(dst, bytes)) return note(cudaErrorInvalidValue);
  if (s && !g_streams.count(s)) return note(cudaErrorInvalidResourceHandle);
  Op op{Op::Set};
  op.dst = dst;
  op.n = bytes;
  op.value = value;
  op.name = "cudaMemsetAsync";
  op.where = std::to_string(bytes) + " bytes";
  op.acc.emplace_back(dst, true);
  enqueue(S(s), std::move(op));
  return cudaSuccess;
}
cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  Lock l(g_mu);
  cudaError_t e = cudaMemsetAsync(dst, value, bytes, nullptr);
  if (e != cudaSuccess) return e;
  flush(&g_null_stream, g_null_stream.enqueued);
  host_waits(g_null_stream.vc);
  return waited();
}

cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, 0); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  Lock l(g_mu);
  *s = new CUstream_st;
  (*s)->sid = (int)g_all_streams.size();
  g_streams.insert(*s);
  g_all_streams.push_back(*s);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  Lock l(g_mu);
  if (!s || !g_streams.count(s)) return note(cudaErrorInvalidResourceHandle);
  g_streams.erase(s);  // its queued work still runs, when something forces it
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  Lock l(g_mu);
  if (s && !g_streams.count(s)) return note(cudaErrorInvalidResourceHandle);
  flush(S(s), S(s)->enqueued);
  host_waits(S(s)->vc);
  return waited();
}
cudaError_t cudaDeviceSynchronize() {
  Lock l(g_mu);
  flush_all();
  host_waits_all();
  return waited();
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned) {
  Lock l(g_mu);
  if ((s && !g_streams.count(s)) || !g_events.count(e)) return note(cudaErrorInvalidResourceHandle);
  if (!e->s) return cudaSuccess;  // never recorded: nothing to wait for
  Op op{Op::Wait};
  op.wait_stream = e->s;
  op.wait_seq = e->seq;
  op.wait_vc = e->vc;
  enqueue(S(s), std::move(op));
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, 0); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags) {
  Lock l(g_mu);
  *e = new CUevent_st;
  (*e)->timing = !(flags & cudaEventDisableTiming);
  g_events.insert(*e);
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  Lock l(g_mu);
  if (!g_events.count(e)) return note(cudaErrorInvalidResourceHandle);
  g_events.erase(e);  // a queued marker may still point at it
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  Lock l(g_mu);
  if ((s && !g_streams.count(s)) || !g_events.count(e)) return note(cudaErrorInvalidResourceHandle);
  Op op{Op::Marker};
  op.ev = e;
  CUstream_st* st = S(s);
  enqueue(st, std::move(op));
  e->s = st;
  e->seq = st->enqueued;
  e->done = false;
  e->polled = false;
  e->t_ms = -1;
  e->vc = st->q.back().vc;
  st->q.back().record_no = ++e->record_no;
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  Lock l(g_mu);
  if (!g_events.count(e)) return note(cudaErrorInvalidResourceHandle);
  if (e->s) flush(e->s, e->seq);
  host_waits(e->vc);
  return waited();
}
// Not ready while its work is queued; a second query in a row runs that work (a GPU gets
// there eventually, and a polling loop must end).
cudaError_t cudaEventQuery(cudaEvent_t e) {
  Lock l(g_mu);
  if (!g_events.count(e)) return note(cudaErrorInvalidResourceHandle);
  if (!e->s || e->done) return g_sticky;
  if (!e->polled) {
    e->polled = true;
    return cudaErrorNotReady;
  }
  return cudaEventSynchronize(e);
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  Lock l(g_mu);
  if (!g_events.count(a) || !g_events.count(b) || !a->timing || !b->timing)
    return note(cudaErrorInvalidResourceHandle);
  if (!a->done || !b->done) return note(cudaErrorNotReady);
  *ms = (float)(b->t_ms - a->t_ms);
  return cudaSuccess;
}

// ---- cuBLAS v2 (the calls ccn's native/cuda/cublas.cu loads) --------------------------
struct CcnSimCublas {
  cudaStream_t stream = nullptr;
};
enum { CUBLAS_OK = 0, CUBLAS_NOT_INITIALIZED = 1, CUBLAS_INVALID_VALUE = 7 };

int cublasCreate_v2(void** h) {
  *h = new CcnSimCublas;
  return CUBLAS_OK;
}
int cublasDestroy_v2(void* h) {
  delete (CcnSimCublas*)h;
  return CUBLAS_OK;
}
int cublasSetStream_v2(void* h, cudaStream_t s) {
  if (!h) return CUBLAS_NOT_INITIALIZED;
  ((CcnSimCublas*)h)->stream = s;
  return CUBLAS_OK;
}
int cublasGetVersion_v2(void* h, int* v) {
  *v = 130000;
  return CUBLAS_OK;
}
const char* cublasGetStatusString(int st) {
  switch (st) {
    case CUBLAS_OK: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

// Column-major C(m x n) = alpha op(A)(m x k) op(B)(k x n) + beta C; beta == 0 does not read C.
int cublasSgemm_v2(void* h, int ta, int tb, int m, int n, int k, const float* alpha, const float* A, int lda,
                   const float* B, int ldb, const float* beta, float* C, int ldc) {
  Lock l(g_mu);
  if (!h) return CUBLAS_NOT_INITIALIZED;
  if ((ta != 0 && ta != 1) || (tb != 0 && tb != 1) || m < 0 || n < 0 || k < 0) return CUBLAS_INVALID_VALUE;
  const int a_rows = ta == 0 ? m : k, a_cols = ta == 0 ? k : m;
  const int b_rows = tb == 0 ? k : n, b_cols = tb == 0 ? n : k;
  if (lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) || ldc < std::max(1, m)) return CUBLAS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_OK;
  const float al = *alpha, be = *beta;  // host pointer mode: read at the call
  char where[200];
  snprintf(where, sizeof where, "cublasSgemm(%s, %s, m=%d, n=%d, k=%d, lda=%d, ldb=%d, ldc=%d)", ta ? "T" : "N",
           tb ? "T" : "N", m, n, k, lda, ldb, ldc);
  auto extent = [](int rows, int cols, int ld) { return cols == 0 ? size_t(0) : ((size_t)(cols - 1) * ld + rows) * 4; };
  // Each matrix the product reads or writes must lie inside one allocation (cuBLAS would fault).
  std::string bad, need;
  auto check = [&](const char* what, const void* p, size_t bytes) {
    if (dev_range(p, bytes)) return;
    bad += bad.empty() ? what : std::string(" and ") + what;
    char buf[160];
    const Alloc* a = near_alloc(p);
    snprintf(buf, sizeof buf, "; %s needs %zu bytes from %p, %s", what, bytes, p,
             a ? ("which is offset " + std::to_string((long)((const char*)p - a->p)) + " in " + alloc_text(*a)).c_str()
               : "not device memory");
    need += buf;
  };
  if (k > 0 && al != 0.f) {
    check("A", A, extent(a_rows, a_cols, lda));
    check("B", B, extent(b_rows, b_cols, ldb));
  }
  check("C", C, extent(m, n, ldc));
  Op op{Op::Task};
  op.name = where;
  op.where = "cuBLAS";
  if (k > 0 && al != 0.f) op.acc = {{A, false}, {B, false}};
  op.acc.emplace_back(C, true);
  if (!bad.empty()) {
    std::string msg = "matrix " + bad + " does not lie inside one device allocation (column-major, as cuBLAS sees "
                      "it: ccn's row-major wrapper passes its operands swapped)" + need;
    op.body = [msg] { kernel_error(msg); };
  } else {
    op.body = [=] {
      // cuBLAS's rule: with beta == 0, C is written, never read (it may hold NaN).
      if (be == 0.f)
        for (int j = 0; j < n; ++j) std::fill(C + (size_t)j * ldc, C + (size_t)j * ldc + m, 0.f);
      CCNSIM_SGEMM(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, al, A, lda,
                   B, ldb, be, C, ldc);
    };
  }
  enqueue(S(((CcnSimCublas*)h)->stream), std::move(op));
  return CUBLAS_OK;
}

}  // extern "C"
