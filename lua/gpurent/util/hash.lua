-- gpurent.hash: SHA-256 on OpenSSL (runtime/hash.c).
--   hash.sha256_file(path) -> hex, bytes
--   hash.sha256(string) -> hex
--   local h = hash.sha256_new(); h:update(chunk); h:hex()
local core = require("gpurent.core").hash

return {
  sha256_file = core.sha256_file,
  sha256 = core.sha256,
  sha256_new = core.sha256_new,
}
