// ccn/native/core/error.h: the one exception family of the C++ core.
//
// Every failure the core reports is a ccn::Error. Its kind decides the Python exception it
// becomes (ccn.errors.ConfigError / InputError / CcnRuntimeError) and the CLI's exit code
// (2 for config and input, 1 for runtime). Messages are whole sentences meant for users.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace ccn {

enum class ErrorKind { Config, Input, Runtime };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& msg) : std::runtime_error(msg), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <class T, class... R>
void append(std::ostringstream& os, const T& first, const R&... rest) {
  os << first;
  append(os, rest...);
}
}  // namespace detail

template <class... A>
std::string cat(const A&... parts) {
  std::ostringstream os;
  detail::append(os, parts...);
  return os.str();
}

// Messages for users are one paragraph: a line break that comes from a quoted value (an
// indented continuation line joins values with one) is shown as \n, never printed raw.
inline std::string one_line(std::string s) {
  std::string out;
  for (char c : s) {
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else out += c;
  }
  return out;
}

template <class... A>
[[noreturn]] void config_error(const A&... parts) {
  throw Error(ErrorKind::Config, one_line(cat(parts...)));
}
template <class... A>
[[noreturn]] void input_error(const A&... parts) {
  throw Error(ErrorKind::Input, one_line(cat(parts...)));
}
template <class... A>
[[noreturn]] void runtime_error(const A&... parts) {
  throw Error(ErrorKind::Runtime, cat(parts...));
}

// Internal invariant: a failure here is a bug in ccn, reported with file and line.
#define CCN_CHECK(cond, ...)                                                              \
  do {                                                                                    \
    if (!(cond))                                                                          \
      ::ccn::runtime_error("internal error at ", __FILE__, ":", __LINE__, ": ", #cond,    \
                           " failed. ", ##__VA_ARGS__);                                   \
  } while (0)

}  // namespace ccn
