-- gpurent: the table every recipe sees as the global `gpurent`. It holds the
-- runtime's own facts (version, search path) and the error kinds that map to exit
-- codes; the primitives live in their own modules (gpurent.yaml, gpurent.hash, ...).
local core = require "gpurent.core"
local errors = require "gpurent.util.errors"

local gpurent = {
  version = core.host.version,
  core = core,
  refuse = errors.refuse,         -- a safety gate said no: exit 3
  usage_error = errors.usage,     -- the caller's words are off: exit 2
  is_refusal = errors.is_refusal,
  errors = errors,                -- the one error type: errors.is(e, kind), errors.message(e)
}

-- The module search path, in order, joined with ':' like PATH.
function gpurent.path()
  return table.concat(core.host.search_dirs, ":")
end

-- Directory holding gpurent's own lua/, profiles/ and recipes/.
function gpurent.share_dir()
  return core.host.share_dir
end

function gpurent.project_dir()
  return core.host.project_dir
end

gpurent.now = core.sys.now
gpurent.sleep = core.sys.sleep
gpurent.isatty = core.sys.isatty

-- SSH primitives (issue 3): loaded on first use
gpurent.secret = require "gpurent.util.secret"
function gpurent.connect(target, opts) return require("gpurent.transport.instance").connect(target, opts) end
function gpurent.parallel(items, fn, opts) return require("gpurent.transport.sched").parallel(items, fn, opts) end

-- Team libraries (gpurent lib add): a module found nowhere else may live in one.
-- The searcher loads gpurent.lib only on such a miss, keeping start-up small.
table.insert(package.searchers, function(modname)
  if modname:sub(1, 8) == "gpurent." then return nil end
  return require("gpurent.config.lib").search_module(modname)
end)
gpurent.lib_searcher_installed = true

_G.gpurent = gpurent
return gpurent
