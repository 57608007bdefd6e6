-- ssh_cert_spec: OpenSSH user certificates (issue 17) against a real sshd that trusts a
-- CA (TrustedUserCAKeys) and has none of these user keys in authorized_keys.
-- libssh2 1.10 signs ECDSA certificates; ed25519 and RSA ones are refused, naming
-- CertificateFile, the file and why (sshconfig.cert_refusal).
local sshd = require "sshd"
local sshconfig = require "gpurent.transport.sshconfig"

local function write(p, s) local f = assert(io.open(p, "w")); f:write(s); f:close(); return p end
local function esc(s) return (s:gsub("%p", "%%%0")) end

describe("certificate auth (CertificateFile, KEY-cert.pub)", function()
  local dir, fx, ca
  setup(function()
    dir = T.tmpdir()
    ca = sshd.keygen(dir, "ed25519", "ca")
    fx = sshd.start{sshd_options = "TrustedUserCAKeys " .. ca .. ".pub"}
  end)
  teardown(function()
    if fx then fx:stop() end
    T.rmtree(dir)
  end)

  -- A user key (ECDSA keys are PEM: see sshd.keygen) certified by the CA for principal.
  local function certified(ktype, name, principal)
    local key = sshd.keygen(dir, ktype, name)
    assert.is_true(os.execute(string.format("ssh-keygen -q -s %s -I gpurent-test -n %s %s >/dev/null 2>&1",
      T.q(ca), T.q(principal), T.q(key .. ".pub"))))
    return key
  end

  local function cfgfile(name, lines)
    return write(dir .. "/" .. name, table.concat({
      "Host c", "  HostName " .. fx.addrs[1], "  Port " .. fx.port, "  User root",
      "  UserKnownHostsFile " .. fx.known_hosts, "  GlobalKnownHostsFile none",
      "  IdentitiesOnly yes", "  IdentityAgent none",
      table.concat(lines, "\n"), ""}, "\n"))
  end

  it("connects with an ECDSA certificate named by CertificateFile (the key alone is not authorized)", function()
    local key = certified("ecdsa", "id_ecdsa_root", "root")
    local cert = dir .. "/cert_elsewhere.pub"           -- not KEY-cert.pub: matched by its public key
    assert.is_true(os.rename(key .. "-cert.pub", cert))
    -- control: the key without its certificate is refused
    local ok, err = pcall(gpurent.connect, "c", {config = cfgfile("nocert", {"  IdentityFile " .. key})})
    assert.is_false(ok)
    assert.matches("authentication failed", tostring(err))
    local inst = gpurent.connect("c", {config = cfgfile("withcert", {"  IdentityFile " .. key,
      "  CertificateFile " .. cert})})
    assert.equal("publickey", inst.conn.auth)
    assert.equal("in\n", inst:sh("echo in").stdout)
    inst:close()
  end)

  it("connects with KEY-cert.pub next to the IdentityFile, as ssh does", function()
    local key = certified("ecdsa", "id_ecdsa_implicit", "root")
    local inst = gpurent.connect("c", {config = cfgfile("implicit", {"  IdentityFile " .. key})})
    assert.equal("publickey", inst.conn.auth)
    inst:close()
  end)

  it("a certificate for another principal is refused, naming the certificate and its principals", function()
    local key = certified("ecdsa", "id_ecdsa_alice", "alice")
    local ok, err = pcall(gpurent.connect, "c", {config = cfgfile("alice", {"  IdentityFile " .. key,
      "  CertificateFile " .. key .. "-cert.pub"})})
    assert.is_false(ok)
    err = tostring(err)
    assert.matches("authentication failed for user root", err)
    assert.matches("certificate " .. esc(key) .. "%-cert%.pub %(signed by " .. esc(key), err)
    assert.matches("the certificate names principals: alice", err)
  end)

  it("refuses an ed25519 or RSA CertificateFile before connecting, naming the file, file:line and why", function()
    local ed = certified("ed25519", "id_ed_root", "root")
    local cfg = cfgfile("edcert", {"  IdentityFile " .. ed, "  CertificateFile " .. ed .. "-cert.pub"})
    local ok, err = pcall(gpurent.connect, "c", {config = cfg})
    assert.is_false(ok)
    assert.matches("CertificateFile gpurent cannot use %(" .. esc(cfg) .. ":10%)", tostring(err))
    assert.matches("certificatefile " .. esc(ed) .. "%-cert%.pub: an ed25519 certificate: libssh2 1%.10 labels " ..
      "the signature ssh%-ed25519%-cert%-v01@openssh%.com", tostring(err))
    local rsa = certified("rsa", "id_rsa_root", "root")
    ok, err = pcall(sshconfig.resolve, "c", {config = cfgfile("rsacert", {"  CertificateFile " .. rsa .. "-cert.pub"})})
    assert.is_false(ok)
    assert.matches("an RSA certificate: libssh2 1%.10 can offer it only as ssh%-rsa%-cert%-v01", tostring(err))
    -- a missing CertificateFile is skipped, as ssh skips it
    local c = sshconfig.resolve("c", {config = cfgfile("missing", {"  CertificateFile " .. dir .. "/none-cert.pub"})})
    assert.same({dir .. "/none-cert.pub"}, c.certificatefiles)
  end)

  it("an implicit ed25519 KEY-cert.pub is reported as not presented, with why", function()
    local ed = certified("ed25519", "id_ed_implicit", "root")
    local ok, err = pcall(gpurent.connect, "c", {config = cfgfile("edimplicit", {"  IdentityFile " .. ed})})
    assert.is_false(ok)
    assert.matches("certificate " .. esc(ed) .. "%-cert%.pub %(not presented: an ed25519 certificate", tostring(err))
  end)
end)
