// Readers of the data files a researcher has, without LibTorch: NumPy's .npy and
// .npz (the NPY format: a header of dtype, fortran_order and shape, then the raw
// array; an .npz is a zip of .npy files, stored or deflated), CSV, and an
// ImageFolder tree of PNG (libpng) and JPEG (libjpeg-turbo) files. Every length
// read from a file is checked against the bytes present before it is used.
#include <cstddef>
#include <cstdio>
// jpeglib.h needs size_t and FILE first.
#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <csetjmp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "ttpred/data.hpp"
#include "ttpred/error.hpp"

namespace fs = std::filesystem;

namespace ttpred {

namespace {

std::vector<unsigned char> read_file(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(Exit::input, path + ": no such file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(Exit::input, path + ": cannot open for reading");
  return std::vector<unsigned char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Text from a file, safe in a one-line message: control characters become '?', at most 80 characters.
std::string printable(const std::string& s) {
  std::string o = s.substr(0, 80);
  for (auto& c : o)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return s.size() > 80 ? o + "..." : o;
}

uint32_t le16(const unsigned char* p) { return uint32_t(p[0]) | (uint32_t(p[1]) << 8); }
uint32_t le32(const unsigned char* p) { return le16(p) | (le16(p + 2) << 16); }

// The value of 'key' in the NPY header dict (a Python literal), up to the next
// top-level comma or the closing brace.
std::string header_field(const std::string& h, const std::string& key, const std::string& what) {
  size_t at = h.find("'" + key + "'");
  if (at == std::string::npos) at = h.find("\"" + key + "\"");
  if (at == std::string::npos) throw Error(Exit::input, what + ": NPY header has no '" + key + "'");
  at = h.find(':', at);
  if (at == std::string::npos) throw Error(Exit::input, what + ": malformed NPY header");
  ++at;
  int depth = 0;
  size_t end = at;
  for (; end < h.size(); ++end) {
    char c = h[end];
    if (c == '(' || c == '[') ++depth;
    if (c == ')' || c == ']') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
  }
  std::string v = h.substr(at, end - at);
  v.erase(0, v.find_first_not_of(" \t"));
  v.erase(v.find_last_not_of(" \t") + 1);
  return printable(v);
}

}  // namespace

double NpyArray::at(int64_t i) const {
  const unsigned char* p = bytes.data() + size_t(i) * size_t(itemsize);
  switch (kind) {
    case 'f':
      if (itemsize == 4) { float v; std::memcpy(&v, p, 4); return v; }
      { double v; std::memcpy(&v, p, 8); return v; }
    case 'i':
      if (itemsize == 1) return double(int8_t(*p));
      if (itemsize == 2) { int16_t v; std::memcpy(&v, p, 2); return v; }
      if (itemsize == 4) { int32_t v; std::memcpy(&v, p, 4); return v; }
      { int64_t v; std::memcpy(&v, p, 8); return double(v); }
    case 'u':
      if (itemsize == 1) return double(*p);
      if (itemsize == 2) { uint16_t v; std::memcpy(&v, p, 2); return v; }
      if (itemsize == 4) { uint32_t v; std::memcpy(&v, p, 4); return v; }
      { uint64_t v; std::memcpy(&v, p, 8); return double(v); }
    default:  // 'b'
      return *p ? 1.0 : 0.0;
  }
}

int64_t NpyArray::numel() const {
  int64_t k = 1;
  for (auto s : shape) k *= s;
  return k;
}

NpyArray parse_npy(const std::vector<unsigned char>& b, const std::string& what) {
  static const unsigned char magic[] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (b.size() < 10 || std::memcmp(b.data(), magic, 6) != 0)
    throw Error(Exit::input, what + ": not an NPY file (no \\x93NUMPY magic; expected numpy.save output)");
  const int major = b[6];
  size_t hlen = 0, off = 0;
  if (major == 1) {
    hlen = le16(&b[8]);
    off = 10;
  } else if (major == 2 || major == 3) {
    if (b.size() < 12) throw Error(Exit::input, what + ": truncated NPY header");
    hlen = le32(&b[8]);
    off = 12;
  } else {
    throw Error(Exit::input, what + ": NPY format version " + std::to_string(major) + " (expected 1, 2 or 3)");
  }
  if (hlen > b.size() - off) throw Error(Exit::input, what + ": truncated NPY header");
  const std::string h(reinterpret_cast<const char*>(&b[off]), hlen);
  off += hlen;
  NpyArray a;
  std::string descr = header_field(h, "descr", what);
  if (descr.size() < 4 || (descr[0] != '\'' && descr[0] != '"'))
    throw Error(Exit::invalid, what + ": dtype " + descr +
                                   " is a structured dtype (expected a plain numeric array: float, int, uint or bool)");
  descr = descr.substr(1, descr.size() - 2);
  const char order = descr[0];
  a.kind = descr[1];
  try {
    a.itemsize = std::stoi(descr.substr(2));
  } catch (...) {
    a.itemsize = 0;
  }
  const bool ok_kind = (a.kind == 'f' && (a.itemsize == 4 || a.itemsize == 8)) ||
                       ((a.kind == 'i' || a.kind == 'u') &&
                        (a.itemsize == 1 || a.itemsize == 2 || a.itemsize == 4 || a.itemsize == 8)) ||
                       (a.kind == 'b' && a.itemsize == 1);
  if (!ok_kind)
    throw Error(Exit::invalid, what + ": dtype '" + descr +
                                   "' is not supported (expected float32/64, (u)int8..64 or bool; convert with "
                                   "arr.astype('float32'))");
  if (order == '>' && a.itemsize > 1)
    throw Error(Exit::invalid, what + ": dtype '" + descr + "' is big-endian (expected little-endian; convert with "
                                   "arr.astype('<" + std::string(1, a.kind) + std::to_string(a.itemsize) + "'))");
  const std::string fortran = header_field(h, "fortran_order", what);
  if (fortran != "True" && fortran != "False")
    throw Error(Exit::input, what + ": NPY header fortran_order is '" + fortran + "' (expected True or False)");
  std::string shape = header_field(h, "shape", what);
  if (shape.size() < 2 || shape.front() != '(' || shape.back() != ')')
    throw Error(Exit::input, what + ": NPY header shape '" + shape + "' is not a tuple");
  std::stringstream ss(shape.substr(1, shape.size() - 2));
  std::string item;
  size_t total = 1;
  const size_t have = b.size() - off;
  while (std::getline(ss, item, ',')) {
    item.erase(0, item.find_first_not_of(" "));
    item.erase(item.find_last_not_of(" ") + 1);
    if (item.empty()) continue;
    if (item.find_first_not_of("0123456789") != std::string::npos || item.size() > 15)
      throw Error(Exit::input, what + ": NPY header shape '" + shape + "' is not a tuple of sizes");
    const int64_t dim = std::stoll(item);
    if (dim != 0 && total > have / size_t(a.itemsize) / size_t(dim))
      throw Error(Exit::input, what + ": truncated NPY data (the shape " + shape + " needs more bytes than the file has)");
    total *= size_t(dim);
    a.shape.push_back(dim);
  }
  const size_t need = total * size_t(a.itemsize);
  if (have < need)
    throw Error(Exit::input, what + ": truncated NPY data (" + std::to_string(have) + " bytes, shape " + shape +
                                 " needs " + std::to_string(need) + ")");
  a.bytes.assign(b.begin() + long(off), b.begin() + long(off + need));
  if (fortran == "True" && a.shape.size() > 1) {
    // Column-major on disk: element (i0, .., ik) at sum i_j * prod_{l<j} s_l.
    std::vector<unsigned char> c(need);
    std::vector<int64_t> idx(a.shape.size(), 0);
    std::vector<size_t> stride(a.shape.size(), 1);
    for (size_t j = 1; j < a.shape.size(); ++j) stride[j] = stride[j - 1] * size_t(a.shape[j - 1]);
    for (size_t lin = 0; lin < total; ++lin) {
      size_t src = 0;
      for (size_t j = 0; j < idx.size(); ++j) src += size_t(idx[j]) * stride[j];
      std::memcpy(&c[lin * size_t(a.itemsize)], &a.bytes[src * size_t(a.itemsize)], size_t(a.itemsize));
      for (size_t j = idx.size(); j-- > 0;) {  // C-order odometer
        if (++idx[j] < a.shape[j]) break;
        idx[j] = 0;
      }
    }
    a.bytes.swap(c);
  }
  return a;
}

NpyArray read_npy(const std::string& path) { return parse_npy(read_file(path), path); }

std::map<std::string, NpyArray> read_npz(const std::string& path) {
  const std::vector<unsigned char> b = read_file(path);
  // End of central directory: the last "PK\5\6" within 64 KiB + 22 bytes of the end.
  size_t eocd = std::string::npos;
  for (size_t i = b.size() >= 22 ? b.size() - 22 : 0, stop = b.size() > 65557 ? b.size() - 65557 : 0;
       b.size() >= 22; --i) {
    if (le32(&b[i]) == 0x06054b50) {
      eocd = i;
      break;
    }
    if (i == stop) break;
  }
  if (eocd == std::string::npos)
    throw Error(Exit::input, path + ": not an .npz file (no zip directory; expected numpy.savez output)");
  const size_t count = le16(&b[eocd + 10]), cd_size = le32(&b[eocd + 12]), cd_off = le32(&b[eocd + 16]);
  if (cd_off == 0xffffffff || count == 0xffff)
    throw Error(Exit::input, path + ": a zip64 .npz (over 4 GiB) is not supported: save a sample of the data");
  if (cd_off > b.size() || cd_size > b.size() - cd_off) throw Error(Exit::input, path + ": corrupt zip directory");
  std::map<std::string, NpyArray> out;
  size_t p = cd_off;
  for (size_t e = 0; e < count; ++e) {
    if (p + 46 > b.size() || le32(&b[p]) != 0x02014b50) throw Error(Exit::input, path + ": corrupt zip directory");
    const uint32_t method = le16(&b[p + 10]), csize = le32(&b[p + 20]), usize = le32(&b[p + 24]);
    const size_t nlen = le16(&b[p + 28]), xlen = le16(&b[p + 30]), clen = le16(&b[p + 32]);
    const size_t local = le32(&b[p + 42]);
    if (p + 46 + nlen > b.size()) throw Error(Exit::input, path + ": corrupt zip directory");
    std::string name = printable(std::string(reinterpret_cast<const char*>(&b[p + 46]), nlen));
    p += 46 + nlen + xlen + clen;
    if (csize == 0xffffffff || usize == 0xffffffff || local == 0xffffffff)
      throw Error(Exit::input, path + ": " + name + ": a zip64 member (over 4 GiB) is not supported");
    if (local + 30 > b.size() || le32(&b[local]) != 0x04034b50)
      throw Error(Exit::input, path + ": " + name + ": corrupt zip entry");
    const size_t data = local + 30 + le16(&b[local + 26]) + le16(&b[local + 28]);
    if (data > b.size() || csize > b.size() - data) throw Error(Exit::input, path + ": " + name + ": truncated zip entry");
    std::vector<unsigned char> raw;
    if (method == 0) {
      raw.assign(b.begin() + long(data), b.begin() + long(data + csize));
    } else if (method == 8) {
      if (uint64_t(usize) > 1032ull * csize + 1024)  // beyond deflate's largest ratio: a corrupt size
        throw Error(Exit::input, path + ": " + name + ": corrupt zip entry (its sizes do not fit deflate)");
      raw.resize(usize);
      z_stream z{};
      if (inflateInit2(&z, -MAX_WBITS) != Z_OK) throw Error(Exit::internal, "zlib inflateInit2 failed");
      z.next_in = const_cast<unsigned char*>(&b[data]);
      z.avail_in = csize;
      z.next_out = raw.data();
      z.avail_out = usize;
      const int rc = inflate(&z, Z_FINISH);
      const bool ok = rc == Z_STREAM_END && z.total_out == usize;
      inflateEnd(&z);
      if (!ok) throw Error(Exit::input, path + ": " + name + ": corrupt deflate data");
    } else {
      throw Error(Exit::input, path + ": " + name + ": zip compression method " + std::to_string(method) +
                                   " (expected stored or deflate, as numpy.savez[_compressed] write)");
    }
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".npy") == 0) name.resize(name.size() - 4);
    out.emplace(name, parse_npy(raw, path + ": " + name));
  }
  return out;
}

// ---- CSV ---------------------------------------------------------------

namespace {

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> f;
  std::string cur;
  bool quoted = false;
  for (char c : line) {
    if (c == '"') quoted = !quoted;
    else if (c == ',' && !quoted) f.push_back(cur), cur.clear();
    else cur += c;
  }
  f.push_back(cur);
  for (auto& s : f) {
    s.erase(0, s.find_first_not_of(" \t"));
    s.erase(s.find_last_not_of(" \t\r") + 1);
  }
  return f;
}

bool parse_number(const std::string& s, double& v) {
  if (s.empty()) return false;
  char* end = nullptr;
  v = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size();
}

}  // namespace

Dataset read_csv(const std::string& path, const std::string& label_column) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(Exit::input, path + ": no such file");
  std::ifstream in(path);
  if (!in) throw Error(Exit::input, path + ": cannot open for reading");
  std::string line;
  if (!std::getline(in, line)) throw Error(Exit::input, path + ": empty CSV file (expected a header row)");
  const std::vector<std::string> header = split_csv(line);
  const std::string want = label_column.empty() ? "label" : label_column;
  auto it = std::find(header.begin(), header.end(), want);
  if (it == header.end()) {
    std::string cols;
    for (const auto& h : header) cols += (cols.empty() ? "" : ", ") + printable(h);
    throw Error(Exit::invalid, path + ": no column '" + want + "' in the header (columns: " + cols +
                                   "); name the label column with data.label");
  }
  const size_t lc = size_t(it - header.begin());
  Dataset d;
  d.source = path;
  d.sample_shape = {int64_t(header.size()) - 1};
  std::vector<std::string> names;
  bool numeric_labels = true, all_numbers = true;
  int64_t row = 1;
  while (std::getline(in, line)) {
    ++row;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::vector<std::string> f = split_csv(line);
    if (f.size() != header.size())
      throw Error(Exit::invalid, path + ":" + std::to_string(row) + ": " + std::to_string(f.size()) +
                                     " fields, the header has " + std::to_string(header.size()));
    for (size_t c = 0; c < f.size(); ++c) {
      double v;
      if (c == lc) {
        names.push_back(f[c]);
        const bool number = parse_number(f[c], v);
        all_numbers &= number;
        numeric_labels &= number && v == std::floor(v) && v >= 0;
        continue;
      }
      if (!parse_number(f[c], v))
        throw Error(Exit::invalid, path + ":" + std::to_string(row) + ": column '" + printable(header[c]) + "': '" + printable(f[c]) +
                                       "' is not a number (every column but the label must be numeric)");
      d.x.push_back(float(v));
    }
  }
  d.n = int64_t(names.size());
  if (d.n == 0) throw Error(Exit::invalid, path + ": no data rows after the header");
  if (all_numbers && !numeric_labels)
    throw Error(Exit::invalid, path + ": column '" + want + "' holds numbers that are not class ids (integers >= 0); "
                                   "float targets (mse) go in an .npz with y float [N, C]");
  if (numeric_labels) {
    for (const auto& s : names) d.y.push_back(int64_t(std::stod(s)));
  } else {  // class names: ids in sorted order, as ImageFolder
    std::set<std::string> sorted(names.begin(), names.end());
    std::map<std::string, int64_t> id;
    for (const auto& s : sorted) id.emplace(s, int64_t(id.size()));
    for (const auto& s : names) d.y.push_back(id[s]);
    d.class_names.assign(sorted.begin(), sorted.end());
  }
  d.available = d.n;
  return d;
}

// ---- images ------------------------------------------------------------

namespace {

constexpr uint64_t kMaxPixels = uint64_t(1) << 28;  // refuse a header claiming more (no huge allocation)

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_quiet(j_common_ptr) {}  // no warnings on stderr (a corrupt file is reported once, as an error)

void jpeg_fail(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  std::longjmp(e->jump, 1);
}

// Decodes into out (H*W*channels bytes, interleaved); "" or the decoder's message.
std::string decode_jpeg(const std::vector<unsigned char>& bytes, int channels, std::vector<unsigned char>& out,
                        int& h, int& w) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  err.mgr.output_message = jpeg_quiet;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return err.message;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, const_cast<unsigned char*>(bytes.data()), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  if (uint64_t(cinfo.image_width) * cinfo.image_height > kMaxPixels) {
    jpeg_destroy_decompress(&cinfo);
    return "image of " + std::to_string(cinfo.image_width) + "x" + std::to_string(cinfo.image_height) +
           " pixels is too large (over 2^28)";
  }
  cinfo.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  h = int(cinfo.output_height);
  w = int(cinfo.output_width);
  out.resize(size_t(h) * size_t(w) * size_t(channels));
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = &out[size_t(cinfo.output_scanline) * size_t(w) * size_t(channels)];
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return "";
}

std::string decode_png(const std::vector<unsigned char>& bytes, int channels, std::vector<unsigned char>& out,
                       int& h, int& w) {
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&img, bytes.data(), bytes.size())) return img.message;
  if (uint64_t(img.width) * img.height > kMaxPixels) {
    png_image_free(&img);
    return "image of " + std::to_string(img.width) + "x" + std::to_string(img.height) +
           " pixels is too large (over 2^28)";
  }
  img.format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  h = int(img.height);
  w = int(img.width);
  out.resize(PNG_IMAGE_SIZE(img));
  if (!png_image_finish_read(&img, nullptr, out.data(), 0, nullptr)) {
    std::string m = img.message;
    png_image_free(&img);
    return m;
  }
  return "";
}

std::string lower_ext(const fs::path& p) {
  std::string e = p.extension().string();
  for (auto& c : e) c = char(std::tolower(static_cast<unsigned char>(c)));
  return e;
}

}  // namespace

void resize_bilinear(const float* src, int64_t c, int64_t h, int64_t w, float* dst, int64_t h2, int64_t w2) {
  // F.interpolate(mode="bilinear", align_corners=False): source coordinate
  // (i + 0.5) * in / out - 0.5, clamped at 0.
  auto coord = [](int64_t i, int64_t in, int64_t out, int64_t& i0, int64_t& i1, float& t) {
    float s = std::max(0.0f, (float(i) + 0.5f) * float(in) / float(out) - 0.5f);
    i0 = std::min<int64_t>(int64_t(s), in - 1);
    i1 = std::min<int64_t>(i0 + 1, in - 1);
    t = s - float(i0);
  };
  for (int64_t y = 0; y < h2; ++y) {
    int64_t y0, y1;
    float ty;
    coord(y, h, h2, y0, y1, ty);
    for (int64_t x = 0; x < w2; ++x) {
      int64_t x0, x1;
      float tx;
      coord(x, w, w2, x0, x1, tx);
      for (int64_t k = 0; k < c; ++k) {
        const float* p = src + k * h * w;
        const float top = p[y0 * w + x0] * (1 - tx) + p[y0 * w + x1] * tx;
        const float bot = p[y1 * w + x0] * (1 - tx) + p[y1 * w + x1] * tx;
        dst[k * h2 * w2 + y * w2 + x] = top * (1 - ty) + bot * ty;
      }
    }
  }
}

ImageFolder list_image_folder(const std::string& root) {
  ImageFolder f;
  f.root = root;
  std::vector<fs::path> dirs;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec))
    if (e.is_directory() && e.path().filename().string()[0] != '.') dirs.push_back(e.path());
  if (ec) throw Error(Exit::input, root + ": cannot list the directory: " + ec.message());
  std::sort(dirs.begin(), dirs.end());
  std::vector<std::string> skipped;
  for (const auto& dir : dirs) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (!e.is_regular_file() || e.path().filename().string()[0] == '.') continue;
      const std::string ext = lower_ext(e.path());
      if (ext == ".png" || ext == ".jpg" || ext == ".jpeg")
        files.push_back(e.path());
      else if (skipped.size() < 3)
        skipped.push_back(e.path().filename().string());
    }
    if (files.empty()) continue;
    std::sort(files.begin(), files.end());
    const int64_t id = int64_t(f.class_names.size());
    f.class_names.push_back(dir.filename().string());
    for (const auto& p : files) {
      f.files.push_back(p.string());
      f.labels.push_back(id);
    }
  }
  if (f.files.empty())
    throw Error(Exit::input, root + ": is a directory without class folders of .png/.jpg images (expected an "
                                 "ImageFolder tree ROOT/CLASS/IMAGE.png, or a data file: .pt, .npy, .npz, .csv)" +
                                 (skipped.empty() ? std::string() : " (found e.g. " + skipped.front() + ")"));
  return f;
}

std::vector<float> decode_image(const std::string& path, int64_t channels, int64_t& height, int64_t& width) {
  const std::vector<unsigned char> bytes = read_file(path);
  std::vector<unsigned char> px;
  int h = 0, w = 0;
  const std::string ext = lower_ext(path);
  const std::string err = ext == ".png" ? decode_png(bytes, int(channels), px, h, w)
                                        : decode_jpeg(bytes, int(channels), px, h, w);
  if (!err.empty())
    throw Error(Exit::input, path + ": cannot decode as " + (ext == ".png" ? "PNG" : "JPEG") + ": " + err);
  if (h <= 0 || w <= 0 || px.size() != size_t(h) * size_t(w) * size_t(channels))
    throw Error(Exit::input, path + ": the decoder returned an image of unexpected size");
  height = h;
  width = w;
  std::vector<float> chw(px.size());
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t k = 0; k < channels; ++k)
        chw[size_t(k * h * w + y * w + x)] = float(px[size_t((y * w + x) * channels + k)]) / 255.0f;
  return chw;
}

}  // namespace ttpred
