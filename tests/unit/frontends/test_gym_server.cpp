#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "client/client.hpp"
#include "frontends/gym_server.hpp"
#include "frontends/png.hpp"
#include "frontends/pyjson.hpp"

using namespace gymfarm;
using protocol::Map;
using protocol::Value;
namespace fs = std::filesystem;

namespace {

// A farm of one env whose frame is a 2x3 RGB image; counts renders.
class FrameFarm final : public client::Caller {
 public:
  int renders = 0;
  Value call(std::string_view verb, std::string_view, const Value&) override {
    if (verb == "make") return Value(Map{{"instance_id", std::string(32, 'b')}});
    if (verb == "reset") return Value(Map{{"obs", int64_t{3}}, {"info", Value(Map{})}});
    if (verb == "render") {
      ++renders;
      std::string px(std::size_t{18}, '\0');  // 2 x 3 pixels, RGB
      px[0] = static_cast<char>(renders);     // each frame differs
      protocol::Tensor t;
      t.dtype = protocol::DType::UInt8;
      t.shape = {2, 3, 3};
      t.data = px;
      return Value(Map{{"frame", Value(t)}});
    }
    return Value(Map{});
  }
};

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/gf-gs-XXXXXX";
    REQUIRE(::mkdtemp(tmpl));
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

frontends::HttpReply get(const frontends::GymServerOptions& o, const std::string& target) {
  return frontends::gym_server_file(o, {"GET", target, "", ""});
}

}  // namespace

TEST_CASE("gym-server ids are 8 lowercase hex characters") {
  CHECK(frontends::is_gym_server_id("ce2dbb50"));
  for (const char* bad : {"", "ce2dbb5", "ce2dbb500", "CE2DBB50", "..%2f..%", "ce2dbb5/", "ce2dbb5g"})
    CHECK_FALSE(frontends::is_gym_server_id(bad));
}

TEST_CASE("gym-server renders keep at most max_frames numbered frames, oldest dropped first") {
  TempDir dir;
  FrameFarm farm;
  frontends::GymServerRegistry reg;
  frontends::GymServerOptions o;
  o.root = dir.path + "/gym-server";
  o.max_frames = 3;
  frontends::GymServerSession s(farm, reg, o);
  const auto made = s.handle({"POST", "/v1/envs/create/", R"({"environment": "X-v0"})", "application/json"});
  REQUIRE(made.status == 201);
  const std::string id = frontends::Json::parse(made.body)["instance_id"].get<std::string>();
  for (int k = 1; k <= 5; ++k) {
    const auto r = s.handle({"POST", "/v1/envs/" + id + "/reset/", R"({"render": 1})", ""});
    REQUIRE(r.status == 200);
    CHECK(frontends::Json::parse(r.body)["render"] == "successfully rendered: " + std::to_string(k) + ".png");
  }
  const fs::path rendered = o.root + "/" + id + "/rendered";
  CHECK_FALSE(fs::exists(rendered / "2.png"));
  for (const char* name : {"3.png", "4.png", "5.png", "latest.png"}) CHECK(fs::exists(rendered / name));
  const auto latest = get(o, "/" + id + "/rendered/latest.png");
  REQUIRE(latest.status == 200);
  CHECK(latest.content_type == "image/png");
  CHECK(latest.body.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0);
  CHECK(latest.body == get(o, "/" + id + "/rendered/5.png").body);
  CHECK(latest.body != get(o, "/" + id + "/rendered/4.png").body);
}

TEST_CASE("gym-server files: traversal, odd names and symlinks are 404") {
  TempDir dir;
  frontends::GymServerOptions o;
  o.root = dir.path + "/root";
  fs::create_directories(o.root + "/abcdef01/rendered");
  fs::create_directories(o.root + "/abcdef01/simulation");
  std::ofstream(dir.path + "/secret") << "secret";
  std::ofstream(o.root + "/abcdef01/rendered/1.png") << "png";
  fs::create_symlink(dir.path + "/secret", o.root + "/abcdef01/rendered/2.png");
  fs::create_symlink(dir.path + "/secret", o.root + "/abcdef01/simulation/stats.json");
  fs::create_directory_symlink(dir.path, o.root + "/abcdef02");
  CHECK(get(o, "/abcdef01/rendered/1.png").status == 200);
  for (const char* t :
       {"/../secret", "/%2e%2e/secret", "/abcdef01/rendered/..%2f..%2f..%2fsecret", "/abcdef01/rendered/2.png",
        "/abcdef01/simulation/stats.json", "/abcdef02/secret", "/abcdef02/rendered/", "/abcdef01/rendered/x.png",
        "/abcdef01/other/1.png", "/abcdef01/rendered/%", "/abcdef01/rendered/%zz", "/abcdef01/simulation/.hidden"}) {
    INFO(t);
    const auto r = get(o, t);
    CHECK(r.status == 404);
    CHECK(r.body.find("secret") == std::string::npos);
  }
  CHECK(frontends::gym_server_file(o, {"POST", "/abcdef01/rendered/1.png", "", ""}).status == 405);
}

TEST_CASE("encode_png takes HxWx3 and HxWx4 uint8 frames only") {
  protocol::Tensor t;
  t.dtype = protocol::DType::UInt8;
  t.shape = {1, 2, 4};
  t.data = std::string(8, '\x7f');
  CHECK(frontends::encode_png(t));
  t.shape = {1, 2, 2};
  CHECK_FALSE(frontends::encode_png(t));
  t.shape = {1, 3, 4};  // data too short for the shape
  CHECK_FALSE(frontends::encode_png(t));
  t.dtype = protocol::DType::Float32;
  t.shape = {1, 2, 1};
  CHECK_FALSE(frontends::encode_png(t));
}
