// What the C++ test programs share (tests/selftest.cc, cuda/emulation_test.cc, cuda/harness.cu): one
// deterministic random generator and reading payload files or folders of them.
#pragma once

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace onnx_dc_test {

// xorshift64: the same sequence on every machine, so a failing case can be replayed from its seed.
struct Rng {
  uint64_t s;
  uint64_t Next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  uint64_t Below(uint64_t n) { return n ? Next() % n : 0; }
  float Uniform() { return static_cast<float>(Next() >> 40) / static_cast<float>(1 << 24) * 2.0f - 1.0f; }  // [-1, 1)
};

inline std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// Files as given; a folder stands for its *.bin files, sorted by name.
inline std::vector<std::string> ExpandPaths(const std::vector<std::string>& paths) {
  std::vector<std::string> out;
  for (const std::string& path : paths) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) throw std::runtime_error("no such file or folder: " + path);
    if (!S_ISDIR(st.st_mode)) {
      out.push_back(path);
      continue;
    }
    std::vector<std::string> found;
    if (DIR* d = opendir(path.c_str())) {
      while (dirent* e = readdir(d)) {
        const std::string name = e->d_name;
        if (name.size() > 4 && name.compare(name.size() - 4, 4, ".bin") == 0) found.push_back(path + "/" + name);
      }
      closedir(d);
    }
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

}  // namespace onnx_dc_test
