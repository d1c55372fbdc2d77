/*
 * pte_runner: run an lraqvit-deploy ExecuTorch program (.pte, XNNPACK delegate) on real inputs.
 *
 * It is also the smallest example of an application loading our .pte with the ExecuTorch C++
 * Module API; an Android app's JNI code does the same four steps:
 *
 *   Module module(path);                                   // 1. open the program (lazy)
 *   module.load_method("forward");                         // 2. load: XNNPACK packs weights
 *   auto x = from_blob(data, {1, 3, 224, 224});            // 3. wrap the NCHW float32 image
 *   auto out = module.forward(x);                          // 4. run; out->at(0) = logits
 *
 * Everything else here is I/O and timing:
 *
 *   pte_runner --model M.pte [--inputs DIR] [--outputs DIR] [--iterations N] [--warmup N]
 *              [--threads N] [--method forward] [--print-cpu-features] [--print-libs] [--quiet]
 *
 *   --inputs DIR   DIR/input_<i>.bin for each method input i: raw little-endian data of the
 *                  input's dtype (float32 for our programs) in the shape of the method meta.
 *                  A file may hold S samples back to back (size = S x one input); every input
 *                  must hold the same S. Without --inputs each input is all ones (S = 1).
 *   --outputs DIR  DIR/output_<j>.bin: raw output j of every sample, in sample order
 *                  (S x one output). Each sample is executed once for these, untimed.
 *   --warmup N, --iterations N   N untimed / timed executions of sample 0 (defaults 0 / 1).
 *   --threads N    size of ExecuTorch's thread pool, which XNNPACK runs on (default: keep the
 *                  pool's own size, one thread per performant core).
 *   --print-cpu-features   AArch64: getauxval(AT_HWCAP/AT_HWCAP2) decoded (what cpuinfo, and so
 *                  XNNPACK, bases its kernel choice on) and /proc/cpuinfo's "CPU part".
 *   --print-libs   load address of every shared object (to map program counters to kernels).
 *
 * Output (stdout): the message formats of ExecuTorch's executor_runner that
 * android_runner/runner_output.py parses ("Model loaded in t ms.", "Iteration i of n: t ms",
 * "Model executed successfully n time(s) in t ms."), then one JSON line, schema
 * "lraqvit-deploy/pte_runner/1" (parse_pte_runner_json in runner_output.py). Exit status 0 on
 * success, 1 on a failure, which the JSON line's "error" names.
 *
 * Build: android_runner/native/build.sh (host x86-64, linux-aarch64 cross, Android NDK).
 */
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/core/exec_aten/util/scalar_type_util.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <link.h>
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

#if __has_include(<executorch/extension/threadpool/threadpool.h>)
#include <executorch/extension/threadpool/threadpool.h>
#else
// The PyPI wheels ship libexecutorch_threadpool.so but not threadpool.h; these two declarations
// match the library's exported symbols (ExecuTorch v1.5, extension/threadpool/threadpool.h).
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool
#endif

#ifndef LRAQVIT_ET_VERSION
#define LRAQVIT_ET_VERSION "unknown"
#endif

using executorch::aten::ScalarType;
using executorch::extension::TensorPtr;
using executorch::extension::from_blob;
using executorch::extension::module::Module;
using executorch::runtime::Error;
using executorch::runtime::EValue;

namespace {

struct Options {
  std::string model, inputs, outputs, method = "forward";
  int iterations = 1, warmup = 0, threads = 0;
  bool cpu_features = false, libs = false, quiet = false;
};

std::string json_str(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') { o += '\\'; o += static_cast<char>(c); }
    else if (c == '\n') o += "\\n";
    else if (c < 0x20) { char b[8]; std::snprintf(b, sizeof b, "\\u%04x", c); o += b; }
    else o += static_cast<char>(c);
  }
  return o + "\"";
}

std::string json_num(double x) {
  char b[48];
  std::snprintf(b, sizeof b, "%.6f", x);
  return b;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

template <typename T>
std::string json_list(const std::vector<T>& v) {
  std::ostringstream o;
  o.precision(6);
  o << std::fixed << "[";
  for (size_t i = 0; i < v.size(); ++i) o << (i ? ", " : "") << v[i];
  o << "]";
  return o.str();
}

std::string json_strs(const std::vector<std::string>& v) {
  std::string o = "[";
  for (size_t i = 0; i < v.size(); ++i) o += (i ? ", " : "") + json_str(v[i]);
  return o + "]";
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

bool read_file(const std::string& path, std::vector<uint8_t>& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  out.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  return true;
}

bool write_file(const std::string& path, const std::vector<uint8_t>& data) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  return static_cast<bool>(f);
}

#if defined(__aarch64__) && defined(__linux__)
// Linux arm64 uapi asm/hwcap.h; values past the header of an older sysroot are spelled out.
struct Cap { int word; unsigned bit; const char* name; };
constexpr Cap kCaps[] = {
    {1, 1, "asimd"},    {1, 8, "atomics"},  {1, 9, "fphp"},       {1, 10, "asimdhp"},
    {1, 12, "asimdrdm"}, {1, 20, "asimddp"}, {1, 22, "sve"},       {1, 23, "asimdfhm"},
    {2, 1, "sve2"},     {2, 9, "svei8mm"},  {2, 12, "svebf16"},   {2, 13, "i8mm"},
    {2, 14, "bf16"},    {2, 23, "sme"},     {2, 26, "smei8i32"},  {2, 30, "smefa64"},
    {2, 36, "sve2p1"},  {2, 37, "sme2"},    {2, 38, "sme2p1"},
};

std::string cpu_features_json() {
  unsigned long h1 = getauxval(AT_HWCAP), h2 = getauxval(AT_HWCAP2);
  std::vector<std::string> names;
  for (const Cap& c : kCaps) {
    unsigned long w = c.word == 1 ? h1 : h2;
    if (w & (1UL << c.bit)) names.push_back(c.name);
  }
  std::string part, implementer;
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);) {
    auto val = [&](const char* key, std::string& dst) {
      if (dst.empty() && line.rfind(key, 0) == 0 && line.find(':') != std::string::npos) {
        dst = line.substr(line.find(':') + 1);
        dst.erase(0, dst.find_first_not_of(" \t"));
      }
    };
    val("CPU part", part);
    val("CPU implementer", implementer);
  }
  char hex[64];
  std::snprintf(hex, sizeof hex, "\"hwcap\": \"0x%lx\", \"hwcap2\": \"0x%lx\"", h1, h2);
  return std::string("{\"arch\": \"aarch64\", ") + hex + ", \"features\": " + json_strs(names) +
         ", \"cpu_implementer\": " + json_str(implementer) + ", \"cpu_part\": " + json_str(part) +
         ", \"source\": \"getauxval(AT_HWCAP, AT_HWCAP2)\"}";
}
#else
std::string cpu_features_json() {
  return "{\"arch\": \"other\", \"features\": [], \"source\": \"not an AArch64 Linux build\"}";
}
#endif

int collect_lib(struct dl_phdr_info* info, size_t, void* data) {
  auto* out = static_cast<std::vector<std::string>*>(data);
  if (info->dlpi_name && info->dlpi_name[0]) {
    char base[32];
    std::snprintf(base, sizeof base, "0x%lx", static_cast<unsigned long>(info->dlpi_addr));
    out->push_back("{\"name\": " + json_str(info->dlpi_name) + ", \"base\": \"" + base + "\"}");
  }
  return 0;
}

struct Report {
  std::string error;
  double load_ms = -1;
  int threads = 0;
  std::vector<double> warmup_ms, times_ms;
  std::vector<std::string> inputs, outputs;
  size_t samples = 0;
};

void print_json(const Options& opt, const Report& r) {
  std::string out = "{\"schema\": \"lraqvit-deploy/pte_runner/1\", \"runner_version\": 1, "
                    "\"executorch\": " + json_str(LRAQVIT_ET_VERSION) +
                    ", \"model\": " + json_str(opt.model) + ", \"method\": " + json_str(opt.method) +
                    ", \"ok\": " + (r.error.empty() ? "true" : "false") +
                    ", \"error\": " + (r.error.empty() ? "null" : json_str(r.error)) +
                    ", \"threads\": " + std::to_string(r.threads) +
                    ", \"load_ms\": " + (r.load_ms < 0 ? std::string("null") : json_num(r.load_ms));
  out += ", \"warmup\": " + std::to_string(r.warmup_ms.size()) +
         ", \"iterations\": " + std::to_string(r.times_ms.size()) +
         ", \"warmup_ms\": " + json_list(r.warmup_ms) + ", \"times_ms\": " + json_list(r.times_ms) +
         ", \"samples\": " + std::to_string(r.samples) +
         ", \"inputs\": [" + join(r.inputs) + "], \"outputs\": [" + join(r.outputs) + "]";
  if (opt.cpu_features) out += ", \"cpu\": " + cpu_features_json();
  if (opt.libs) {
    std::vector<std::string> libs;
    dl_iterate_phdr(collect_lib, &libs);
    out += ", \"libs\": [" + join(libs) + "]";
  }
  std::printf("%s}\n", out.c_str());
  std::fflush(stdout);
}

int fail(const Options& opt, Report& r, const std::string& why) {
  r.error = why;
  std::fprintf(stderr, "pte_runner: error: %s\n", why.c_str());
  print_json(opt, r);
  return 1;
}

std::string shape_json(const std::vector<int32_t>& s) { return json_list(s); }

const char* usage =
    "usage: pte_runner --model M.pte [--inputs DIR] [--outputs DIR] [--iterations N] [--warmup N]\n"
    "                  [--threads N] [--method NAME] [--print-cpu-features] [--print-libs] [--quiet]\n";

bool parse_args(int argc, char** argv, Options& o, std::string& err) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i], v;
    auto eq = a.find('=');
    if (a.rfind("--", 0) == 0 && eq != std::string::npos) { v = a.substr(eq + 1); a = a.substr(0, eq); }
    auto value = [&](std::string& dst) {
      if (!v.empty()) { dst = v; return true; }
      if (i + 1 >= argc) { err = a + " needs a value"; return false; }
      dst = argv[++i];
      return true;
    };
    auto number = [&](int& dst) {
      std::string s;
      if (!value(s)) return false;
      char* end = nullptr;
      long n = std::strtol(s.c_str(), &end, 10);
      if (!end || *end || n < 0) { err = a + " takes a non-negative integer, got '" + s + "'"; return false; }
      dst = static_cast<int>(n);
      return true;
    };
    if (a == "--model" || a == "--model_path") { if (!value(o.model)) return false; }
    else if (a == "--inputs") { if (!value(o.inputs)) return false; }
    else if (a == "--outputs") { if (!value(o.outputs)) return false; }
    else if (a == "--method") { if (!value(o.method)) return false; }
    else if (a == "--iterations") { if (!number(o.iterations)) return false; }
    else if (a == "--warmup") { if (!number(o.warmup)) return false; }
    else if (a == "--threads" || a == "--cpu_threads") { if (!number(o.threads)) return false; }
    else if (a == "--print-cpu-features") o.cpu_features = true;
    else if (a == "--print-libs") o.libs = true;
    else if (a == "--quiet") o.quiet = true;
    else if (a == "--help" || a == "-h") { std::fputs(usage, stdout); std::exit(0); }
    else { err = "unknown option '" + a + "'"; return false; }
  }
  if (o.model.empty() && !o.cpu_features) { err = "--model is required"; return false; }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  Report rep;
  std::string err;
  if (!parse_args(argc, argv, opt, err)) {
    std::fprintf(stderr, "pte_runner: error: %s\n%s", err.c_str(), usage);
    return 2;
  }
  auto say = [&](const char* fmt, auto... args) {
    if (!opt.quiet) { std::printf(fmt, args...); std::fflush(stdout); }
  };
  if (opt.model.empty()) {  // --print-cpu-features alone
    std::printf("{\"schema\": \"lraqvit-deploy/pte_runner/1\", \"ok\": true, \"cpu\": %s}\n",
                cpu_features_json().c_str());
    return 0;
  }

  auto* pool = executorch::extension::threadpool::get_threadpool();
  if (opt.threads > 0 && pool) {
    say("Resetting threadpool with num threads = %d\n", opt.threads);
    pool->_unsafe_reset_threadpool(static_cast<uint32_t>(opt.threads));
  }
  rep.threads = pool ? static_cast<int>(pool->get_thread_count()) : 1;

  // 1-2. Open the program and load the method (XNNPACK builds its runtime and packs weights here).
  auto t0 = std::chrono::steady_clock::now();
  Module module(opt.model, Module::LoadMode::File);
  Error e = module.load();
  if (e != Error::Ok) return fail(opt, rep, "Failed to parse model file " + opt.model);
  e = module.load_method(opt.method);
  if (e != Error::Ok) {
    char b[128];
    std::snprintf(b, sizeof b, "Loading of method %s failed with status 0x%x", opt.method.c_str(),
                  static_cast<unsigned>(e));
    return fail(opt, rep, b);
  }
  rep.load_ms = ms_since(t0);
  say("Model file %s is loaded.\nUsing method %s\nModel loaded in %f ms.\n", opt.model.c_str(),
      opt.method.c_str(), rep.load_ms);

  auto meta = module.method_meta(opt.method);
  if (!meta.ok()) return fail(opt, rep, "no method meta for " + opt.method);

  // 3. Inputs: one buffer per method input, holding `samples` samples back to back.
  struct Input { std::vector<uint8_t> data; std::vector<int32_t> shape; ScalarType dtype; size_t nbytes; };
  std::vector<Input> inputs;
  size_t samples = 1;
  for (size_t i = 0; i < meta->num_inputs(); ++i) {
    auto tag = meta->input_tag(i);
    if (!tag.ok() || *tag != executorch::runtime::Tag::Tensor)
      return fail(opt, rep, "input " + std::to_string(i) + " is not a tensor; pte_runner feeds tensors only");
    auto info = meta->input_tensor_meta(i);
    Input in;
    in.shape.assign(info->sizes().begin(), info->sizes().end());
    in.dtype = info->scalar_type();
    in.nbytes = info->nbytes();
    std::string source = "ones";
    if (!opt.inputs.empty()) {
      source = opt.inputs + "/input_" + std::to_string(i) + ".bin";
      if (!read_file(source, in.data)) return fail(opt, rep, "cannot read " + source);
      if (in.nbytes == 0 || in.data.size() % in.nbytes != 0 || in.data.empty())
        return fail(opt, rep, source + " holds " + std::to_string(in.data.size()) + " bytes, not a multiple of " +
                              std::to_string(in.nbytes) + " (one " + executorch::runtime::toString(in.dtype) +
                              " input of shape " + shape_json(in.shape) + ")");
      size_t s = in.data.size() / in.nbytes;
      if (i > 0 && s != samples) return fail(opt, rep, source + " holds " + std::to_string(s) +
                                                       " samples, input_0.bin " + std::to_string(samples));
      samples = s;
    } else {
      if (in.dtype != ScalarType::Float) return fail(opt, rep, "input " + std::to_string(i) +
                                                               " is not float32; pass --inputs");
      in.data.resize(in.nbytes);
      float* f = reinterpret_cast<float*>(in.data.data());
      for (size_t k = 0; k < in.nbytes / sizeof(float); ++k) f[k] = 1.0f;
    }
    rep.inputs.push_back("{\"index\": " + std::to_string(i) + ", \"shape\": " + shape_json(in.shape) +
                         ", \"dtype\": " + json_str(executorch::runtime::toString(in.dtype)) +
                         ", \"source\": " + json_str(source) + "}");
    inputs.push_back(std::move(in));
  }
  rep.samples = samples;

  auto run = [&](size_t sample, std::vector<EValue>& outs) -> Error {
    std::vector<TensorPtr> keep;
    std::vector<EValue> args;
    for (auto& in : inputs) {
      std::vector<executorch::aten::SizesType> sizes(in.shape.begin(), in.shape.end());
      keep.push_back(from_blob(in.data.data() + sample * in.nbytes, sizes, in.dtype));
      args.emplace_back(*keep.back());
    }
    auto r = module.execute(opt.method, args);  // 4. run
    if (!r.ok()) return r.error();
    outs = std::move(*r);
    return Error::Ok;
  };
  auto exec_failed = [&](Error err) {
    char b[128];
    std::snprintf(b, sizeof b, "Execution of method %s failed with status 0x%x", opt.method.c_str(),
                  static_cast<unsigned>(err));
    return fail(opt, rep, b);
  };

  // Timing: warm-up + iterations executions of sample 0.
  std::vector<EValue> outs;
  const int total = opt.warmup + opt.iterations;
  double total_ms = 0;
  for (int it = 0; it < total; ++it) {
    auto ti = std::chrono::steady_clock::now();
    Error err = run(0, outs);
    double ms = ms_since(ti);
    if (err != Error::Ok) return exec_failed(err);
    total_ms += ms;
    (it < opt.warmup ? rep.warmup_ms : rep.times_ms).push_back(ms);
    say("Iteration %d of %d: %f ms\n", it + 1, total, ms);
  }
  if (total > 0) say("Model executed successfully %d time(s) in %f ms.\n", total, total_ms);

  // Outputs: every sample once, concatenated per output index.
  if (!opt.outputs.empty()) {
    std::vector<std::vector<uint8_t>> data;
    std::vector<std::string> desc;
    for (size_t s = 0; s < samples; ++s) {
      Error err = run(s, outs);
      if (err != Error::Ok) return exec_failed(err);
      if (data.empty()) data.resize(outs.size());
      for (size_t j = 0; j < outs.size(); ++j) {
        if (!outs[j].isTensor()) continue;
        const auto& t = outs[j].toTensor();
        const uint8_t* p = static_cast<const uint8_t*>(t.const_data_ptr());
        data[j].insert(data[j].end(), p, p + t.nbytes());
        if (s == 0) {
          std::vector<int32_t> shape(t.sizes().begin(), t.sizes().end());
          desc.push_back("{\"index\": " + std::to_string(j) + ", \"shape\": " + shape_json(shape) +
                         ", \"dtype\": " + json_str(executorch::runtime::toString(t.scalar_type())) +
                         ", \"file\": " + json_str(opt.outputs + "/output_" + std::to_string(j) + ".bin") + "}");
        }
      }
    }
    for (size_t j = 0; j < data.size(); ++j) {
      std::string path = opt.outputs + "/output_" + std::to_string(j) + ".bin";
      if (!write_file(path, data[j])) return fail(opt, rep, "cannot write " + path);
    }
    rep.outputs = desc;
  }
  print_json(opt, rep);
  return 0;
}
