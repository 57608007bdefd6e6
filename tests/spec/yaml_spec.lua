-- yaml_spec: the YAML loader profiles and configs go through: core types, anchors,
-- UTF-8, and errors that name file:line:col.
local yaml = require "gpurent.util.yaml"

describe("yaml.load", function()
  it("resolves the core schema types", function()
    local v = yaml.load([[
s: hello
q: "123"
i: 42
neg: -7
hex: 0x1F
oct: 0o17
f: 3.5
e: 1e3
inf: .inf
t: true
F: False
n: null
tilde: ~
empty:
ver: 1.2.3
yes_is_text: yes
]], "types.yaml")
    assert.are.equal("hello", v.s)
    assert.are.equal("123", v.q)
    assert.are.equal(42, v.i); assert.are.equal("integer", math.type(v.i))
    assert.are.equal(-7, v.neg)
    assert.are.equal(31, v.hex)
    assert.are.equal(15, v.oct)
    assert.are.equal(3.5, v.f); assert.are.equal("float", math.type(v.f))
    assert.are.equal(1000.0, v.e)
    assert.are.equal(math.huge, v.inf)
    assert.is_true(v.t); assert.is_false(v.F)
    assert.are.equal(yaml.null, v.n)
    assert.are.equal(yaml.null, v.tilde)
    assert.are.equal(yaml.null, v.empty)
    assert.are.equal("1.2.3", v.ver)
    assert.are.equal("yes", v.yes_is_text)
  end)

  it("honours explicit tags", function()
    local v = yaml.load("a: !!str 12\nb: !!float 2\nc: !!int '7'\n", "tags.yaml")
    assert.are.equal("12", v.a)
    assert.are.equal(2.0, v.b); assert.are.equal("float", math.type(v.b))
    assert.are.equal(7, v.c)
    local ok, err = pcall(yaml.load, "x: !!int abc\n", "bad.yaml")
    assert.is_false(ok)
    assert.are.equal("bad.yaml:1:4: value does not match its tag tag:yaml.org,2002:int", err)
  end)

  it("builds sequences, nested maps, anchors, aliases and merge keys", function()
    local v = yaml.load([[
base: &b {gpu: 4090, price: 2.5}
list: [1, two, {three: 3}]
alias: *b
derived:
  <<: *b
  price: 1.9
]], "anchors.yaml")
    assert.are.same({1, "two", {three = 3}}, v.list)
    assert.are.equal(v.base, v.alias)
    assert.are.same({gpu = 4090, price = 1.9}, v.derived)
  end)

  it("keeps UTF-8 text (profiles carry Chinese) byte for byte", function()
    local v = yaml.load("verb: 关机\nnote: \"释放 deletes the data disk\"\n", "zh.yaml")
    assert.are.equal("关机", v.verb)
    assert.are.equal("释放 deletes the data disk", v.note)
  end)

  it("reports errors as name:line:col: problem", function()
    local ok, err = pcall(yaml.load, "a: 1\nb: 2\nc: d: e\n", "profiles/autodl.yaml")
    assert.is_false(ok)
    assert.matches("^profiles/autodl%.yaml:3:5: mapping values are not allowed in this context", err)
  end)

  it("refuses invalid UTF-8 with the position of the bad byte", function()
    local ok, err = pcall(yaml.load, "ok: yes\nbad: \xff\xfe\n", "bin.yaml")
    assert.is_false(ok)
    assert.matches("^bin%.yaml:2:6: invalid leading UTF%-8 octet", err)
  end)

  it("refuses a second document unless asked, and loads all when asked", function()
    local ok, err = pcall(yaml.load, "a: 1\n---\nb: 2\n", "two.yaml")
    assert.is_false(ok)
    assert.matches("^two%.yaml:2:1: a second YAML document", err)
    local docs = yaml.load("a: 1\n---\nb: 2\n", "two.yaml", {multi = true})
    assert.are.same({{a = 1}, {b = 2}}, docs)
  end)

  it("refuses duplicate keys, unknown aliases and non-scalar keys with positions", function()
    local ok, err = pcall(yaml.load, "a: 1\na: 2\n", "d.yaml")
    assert.is_false(ok); assert.are.equal("d.yaml:2:1: duplicate mapping key: a", err)
    ok, err = pcall(yaml.load, "a: *nope\n", "al.yaml")
    assert.is_false(ok); assert.matches("al%.yaml:1:4: ", err)
    ok, err = pcall(yaml.load, "? [1, 2]\n: x\n", "k.yaml")
    assert.is_false(ok); assert.matches("k%.yaml:1:3: mapping keys must be scalars", err)
  end)

  it("returns the line and column of each key when asked", function()
    local v, pos = yaml.load("top:\n  inner: 1\n  other: 2\n", "p.yaml", {positions = true})
    assert.are.same({1, 1}, pos[v].top)
    assert.are.same({3, 3}, pos[v.top].other)
  end)

  it("loads a huge document and refuses pathological nesting without crashing", function()
    local parts = {}
    for i = 1, 200000 do parts[i] = "k" .. i .. ": [" .. i .. ", v" .. i .. "]" end
    local v = yaml.load(table.concat(parts, "\n"), "huge.yaml")
    assert.are.same({200000, "v200000"}, v.k200000)
    local ok, err = pcall(yaml.load, string.rep("[", 100000), "deep.yaml")
    assert.is_false(ok)
    assert.matches("^deep%.yaml:1:%d+: nesting deeper than the limit", err)
  end)

  -- issue 15: nested aliases ("billion laughs") expand exponentially for whoever
  -- walks the result; the loader caps the nodes reached through aliases.
  local function nested_aliases(levels, width)
    local refs = function(i) return ("*l" .. i .. ", "):rep(width):sub(1, -3) end
    local lines = {"l0: &l0 [" .. ("x, "):rep(width):sub(1, -3) .. "]"}
    for i = 1, levels - 1 do lines[#lines + 1] = ("l%d: &l%d [%s]"):format(i, i, refs(i - 1)) end
    return table.concat(lines, "\n") .. "\n"
  end

  it("refuses alias expansion past its cap, naming file:line:col of the alias", function()
    local ok, err = pcall(yaml.load, nested_aliases(9, 9), "laughs.yaml")
    assert.is_false(ok)
    -- l6 (line 7) would hold 9^7 scalars: its first alias passes the cap of a million
    assert.matches('^laughs%.yaml:7:10: alias %*l5 takes the document past 1000000 nodes ' ..
      'reached through aliases %(the cap against nested%-alias "billion laughs" expansion%)', err)
  end)

  it("loads moderate aliasing, and shares the aliased table", function()
    local v = yaml.load(nested_aliases(6, 9), "moderate.yaml")   -- l5 holds 9^6 scalars
    assert.are.equal(v.l4, v.l5[9])
    assert.are.equal("x", v.l5[9][9][9][9][9][9])
    local many = {"base: &b {gpu: 4090, price: 2.5, tags: [a, b, c]}"}
    for i = 1, 1000 do many[#many + 1] = ("m%d: {<<: *b, id: %d}"):format(i, i) end
    local m = yaml.load(table.concat(many, "\n"), "many.yaml")
    assert.are.same({gpu = 4090, price = 2.5, tags = {"a", "b", "c"}, id = 1000}, m.m1000)
  end)

  it("refuses an alias to the node that contains it (a cycle)", function()
    local ok, err = pcall(yaml.load, "top:\n  a: &a [1, {b: *a}]\n", "cycle.yaml")
    assert.is_false(ok)
    assert.are.equal("cycle.yaml:2:17: alias refers to the node that contains it (a cycle): *a", err)
  end)

  it("loads files and names them in errors", function()
    local dir = T.tmpdir()
    T.write(dir .. "/p.yaml", "name: autodl\ntiers:\n  - data\n")
    assert.are.same({name = "autodl", tiers = {"data"}}, yaml.load_file(dir .. "/p.yaml"))
    T.write(dir .. "/bad.yaml", "x: [1, 2\n")
    local ok, err = pcall(yaml.load_file, dir .. "/bad.yaml")
    assert.is_false(ok)
    assert.matches(dir:gsub("%p", "%%%0") .. "/bad%.yaml:2:1: did not find expected ',' or ']'", err)
    ok, err = pcall(yaml.load_file, dir .. "/missing.yaml")
    assert.is_false(ok); assert.matches("missing%.yaml: No such file", err)
    T.rmtree(dir)
  end)

  it("gives null for an empty document", function()
    assert.are.equal(yaml.null, yaml.load("", "empty.yaml"))
    assert.are.equal(yaml.null, yaml.load("# only a comment\n", "c.yaml"))
  end)
end)
