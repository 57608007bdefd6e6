-- bench/text_tree.lua: a text-heavy results tree (training logs and JSON metrics),
-- the kind zlib compression is for; deterministic (fixed seed) so runs compare.
--   text_tree.make(root, files, bytes) -> total bytes written: `files` files under
--   root/logs/runN/ (half *.log, half *.json) of about bytes/files each.
local text_tree = {}

local function log_text(rng, size)
  local out, n, step = {}, 0, 0
  while n < size do
    step = step + 1
    local line = string.format("2026-11-30T%02d:%02d:%02d.%03dZ INFO train step=%d loss=%.4f lr=%.2e grad_norm=%.3f " ..
      "tokens_per_s=%d gpu_mem_gib=%.1f\n", step // 3600 % 24, step // 60 % 60, step % 60, rng(0, 999), step,
      2.5 / (1 + step / 500) + rng(0, 999) / 10000, 3e-4 * (1 - step / 1e6), rng(500, 3000) / 1000,
      rng(11000, 13000), rng(600, 790) / 10)
    out[#out + 1] = line
    n = n + #line
  end
  return table.concat(out):sub(1, size)
end

local function json_text(rng, size)
  local out, n, i = {"{\"run\": \"sweep-lr\", \"metrics\": [\n"}, 0, 0
  while n < size do
    i = i + 1
    local item = string.format("  {\"epoch\": %d, \"step\": %d, \"train_loss\": %.5f, \"val_loss\": %.5f, " ..
      "\"accuracy\": %.4f, \"lr\": %.3e, \"checkpoint\": \"ckpt/epoch_%04d.pt\"},\n", i // 100, i,
      2 / (1 + i / 300) + rng(0, 999) / 20000, 2.1 / (1 + i / 300) + rng(0, 999) / 20000, rng(6000, 9900) / 10000,
      3e-4 / (1 + i / 1000), i // 100)
    out[#out + 1] = item
    n = n + #item
  end
  return table.concat(out):sub(1, size)
end

function text_tree.make(root, files, bytes)
  local seed = 16
  local function rng(lo, hi)   -- a small LCG: the same tree on every machine and Lua
    seed = (seed * 1103515245 + 12345) % 2147483648
    return lo + seed % (hi - lo + 1)
  end
  local per, total = bytes // files, 0
  for i = 1, files do
    local dir = string.format("%s/logs/run%d", root, i % 10)
    assert(os.execute("mkdir -p '" .. dir:gsub("'", "'\\''") .. "'"))
    local json = i % 2 == 0
    local text = json and json_text(rng, per) or log_text(rng, per)
    local f = assert(io.open(string.format("%s/%s%d.%s", dir, json and "metrics" or "train", i, json and "json" or "log"), "wb"))
    f:write(text)
    f:close()
    total = total + #text
  end
  return total
end

return text_tree
