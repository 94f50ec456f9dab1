-- Address helpers (lua/sluice/addr.lua): text and raw forms, families,
-- prefixes, order and prefix sets, checked against fixed cases and, on a
-- few hundred random addresses and prefixes, against python3's ipaddress
-- module (ground truth that is not sluice).
local ffi = require "ffi"
local addr = require "sluice.addr"
local flow = require "sluice.flow"
local run = require "support.run"

local byte, char, format = string.byte, string.char, string.format

local function hex(s)
  return (s:gsub(".", function(c) return format("%02x", byte(c)) end))
end

local function unhex(h)
  return (h:gsub("%x%x", function(b) return char(tonumber(b, 16)) end))
end

-- The error of a misuse, raised in a frame of this file (no tail call), so
-- that its position shows whom error(msg, 2) blamed.
local function misuse_error(f, ...)
  local args = { n = select("#", ...), ... }
  local ok, err = pcall(function()
    local r = f(unpack(args, 1, args.n))
    return r
  end)
  assert.is_false(ok, "expected an error")
  assert.matches("addr_spec%.lua:%d+: sluice%.addr%.", err)
  return err
end

describe("sluice.addr", function()
  teardown(run.cleanup)

  describe("parse and text", function()
    local CASES = {
      -- input, canonical text, raw (hex)
      { "1.2.3.4", "1.2.3.4", "01020304" },
      { "0.0.0.0", "0.0.0.0", "00000000" },
      { "255.255.255.255", "255.255.255.255", "ffffffff" },
      { "::", "::", ("00"):rep(16) },
      { "::1", "::1", ("00"):rep(15) .. "01" },
      { "2001:db8::1", "2001:db8::1", "20010db8" .. ("00"):rep(11) .. "01" },
      { "2001:DB8::1", "2001:db8::1", "20010db8" .. ("00"):rep(11) .. "01" },
      { "2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1", "20010db8" .. ("00"):rep(11) .. "01" },
      -- RFC 5952 4.2.3: the longest run of zeros, the first of equal runs
      { "2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1", "20010db8000000000001000000000001" },
      { "2001:0:0:1:0:0:0:1", "2001:0:0:1::1", "20010000000000010000000000000001" },
      -- 4.2.2: a single zero field is not compressed
      { "2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1", "20010db8000000010001000100010001" },
      { "FE80::ABCD:EF01", "fe80::abcd:ef01", "fe80" .. ("00"):rep(10) .. "abcdef01" },
      -- 5: IPv4-mapped addresses keep the dotted quad
      { "::ffff:1.2.3.4", "::ffff:1.2.3.4", ("00"):rep(10) .. "ffff01020304" },
      { "::FFFF:0102:0304", "::ffff:1.2.3.4", ("00"):rep(10) .. "ffff01020304" },
      { "[::1]", "::1", ("00"):rep(15) .. "01" },
      { "[2001:DB8::1]", "2001:db8::1", "20010db8" .. ("00"):rep(11) .. "01" },
    }

    it("reads text into raw bytes and writes canonical text back", function()
      for _, c in ipairs(CASES) do
        local raw, err = addr.parse(c[1])
        assert.is_nil(err, c[1])
        assert.equals(c[3], hex(raw), c[1])
        assert.equals(#c[3] / 2, #raw, c[1])
        assert.equals(c[2], addr.text(raw), c[1])  -- from raw
        assert.equals(c[2], addr.text(c[1]), c[1]) -- from text
        -- the canonical text reads back to the same bytes
        assert.equals(raw, addr.parse(c[2]), c[1])
      end
    end)

    it("rejects text that is no address, naming it", function()
      local BAD = { "", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.4/24", "garbage",
        "::1::2", "12345::", "gggg::1", "1:2:3:4:5:6:7:8:9", " 1.2.3.4", "1.2.3.4 ", "1.2.3.4\0",
        "1.2.3.4\0garbage", "fe80::1%eth0", "[1.2.3.4]", "[::1", "::1]", "[]", "[::1]x", "0x1.2.3.4" }
      for _, s in ipairs(BAD) do
        local raw, err = addr.parse(s)
        assert.is_nil(raw, format("%q", s))
        assert.is_string(err)
        assert.truthy(err:find(format("%q", s), 1, true), err)
        -- every function that reads text says the same (4 bytes are
        -- raw, whatever they spell)
        if #s ~= 4 then
          assert.same({ nil, err }, { addr.text(s) })
          assert.same({ nil, err }, { addr.family(s) })
        end
      end
    end)

    it("takes 4 bytes as raw IPv4, 16 bytes as text when they spell an address, else as raw", function()
      -- 58.58.49.48 spells "::10": from a record it is the IPv4 address
      assert.equals("58.58.49.48", addr.text("::10"))
      assert.equals("::10", addr.text("[::10]"))
      -- 16 characters of IPv6 text
      local t16 = "2001:db8::1:2:34"
      assert.equals(16, #t16)
      assert.equals(t16, addr.text(t16))
      assert.equals(6, addr.family(t16))
      local raw = addr.parse(t16)
      assert.equals(t16, addr.text(raw))
      assert.is_true(addr.equal(raw, t16))
      -- raw bytes that start like text but do not parse stay raw
      local r = "3" .. ("\0"):rep(15)
      assert.equals("3300::", addr.text(r))
    end)
  end)

  it("raises, blaming the caller, for arguments of the wrong type", function()
    assert.matches("sluice%.addr%.parse: .*number", misuse_error(addr.parse, 1234))
    assert.matches("sluice%.addr%.text: .*nil", misuse_error(addr.text, nil))
    assert.matches("sluice%.addr%.family: .*table", misuse_error(addr.family, {}))
    assert.matches("sluice%.addr%.prefix: .*number", misuse_error(addr.prefix, 5, 8))
    assert.matches("sluice%.addr%.prefix_text: .*boolean", misuse_error(addr.prefix_text, true, 8))
    assert.matches("sluice%.addr%.prefix_text: .*integer", misuse_error(addr.prefix_text, "::1", nil))
  end)

  describe("family", function()
    it("is 4 or 6 for text and raw; nil, err for neither", function()
      assert.equals(4, addr.family("10.0.0.1"))
      assert.equals(4, addr.family("\10\0\0\1"))
      assert.equals(6, addr.family("2001:db8::1"))
      assert.equals(6, addr.family(addr.parse("::1")))
      assert.equals(6, addr.family("::ffff:1.2.3.4")) -- mapped is IPv6
      local f, err = addr.family("10.0.0")
      assert.is_nil(f)
      assert.matches("not an IP address", err)
      f = addr.family("abcde") -- 5 bytes: text, not an address
      assert.is_nil(f)
    end)
  end)

  describe("prefix", function()
    it("clears host bits of IPv4 at 0, 8, 24, 31 and 32", function()
      local a = "192.168.255.255"
      local want = { [0] = "0.0.0.0", [8] = "192.0.0.0", [24] = "192.168.255.0",
        [31] = "192.168.255.254", [32] = "192.168.255.255" }
      for len, w in pairs(want) do
        assert.equals(addr.parse(w), addr.prefix(a, len), len)
        assert.equals(addr.parse(w), addr.prefix(addr.parse(a), len), len)
        assert.equals(w .. "/" .. len, addr.prefix_text(a, len))
      end
      assert.equals("10.1.2.0/24", addr.prefix_text("10.1.2.3", 24))
      assert.equals("10.1.2.2/31", addr.prefix_text("10.1.2.3", 31))
    end)

    it("clears host bits of IPv6 at 0, 48, 64, 127 and 128", function()
      local a = "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff"
      local want = { [0] = "::", [48] = "2001:db8:aaaa::", [64] = "2001:db8:aaaa:bbbb::",
        [127] = "2001:db8:aaaa:bbbb:cccc:dddd:eeee:fffe", [128] = a }
      for len, w in pairs(want) do
        assert.equals(addr.parse(w), addr.prefix(a, len), len)
        assert.equals(addr.parse(w), addr.prefix(addr.parse(a), len), len)
        assert.equals(w .. "/" .. len, addr.prefix_text(a, len))
      end
      assert.equals("2001:db8::/32", addr.prefix_text("2001:db8:1:2::3", 32))
      assert.equals("2001:db8:8000::/33", addr.prefix_text("2001:db8:ffff::", 33))
    end)

    it("raises for a length outside the family's range or not an integer", function()
      assert.matches("out of range 0%.%.32", misuse_error(addr.prefix, "1.2.3.4", 33))
      assert.matches("out of range 0%.%.32", misuse_error(addr.prefix, "1.2.3.4", -1))
      assert.matches("out of range 0%.%.128", misuse_error(addr.prefix, "::1", 129))
      assert.matches("out of range 0%.%.32", misuse_error(addr.prefix_text, "1.2.3.4", 33))
      assert.matches("integer", misuse_error(addr.prefix, "1.2.3.4", 8.5))
      assert.matches("integer", misuse_error(addr.prefix, "1.2.3.4", "8"))
      -- 33 is fine for IPv6
      assert.equals("2001:db8::/33", addr.prefix_text("2001:db8::1", 33))
      -- bad text is runtime input, not misuse
      local p, err = addr.prefix("1.2.3", 8)
      assert.is_nil(p)
      assert.matches("not an IP address", err)
    end)
  end)

  describe("parse_prefix", function()
    it("clears host bits and takes a bare address as a host prefix", function()
      local net, len = addr.parse_prefix("10.1.2.3/8")
      assert.equals("0a000000", hex(net))
      assert.equals(8, len)
      net, len = addr.parse_prefix("2001:db8:1:2::3/32")
      assert.equals("20010db8" .. ("00"):rep(12), hex(net))
      assert.equals(32, len)
      net, len = addr.parse_prefix("[2001:db8::1]/127")
      assert.equals("20010db8" .. ("00"):rep(12), hex(net))
      assert.equals(127, len)
      net, len = addr.parse_prefix("10.1.2.3")
      assert.equals("0a010203", hex(net))
      assert.equals(32, len)
      net, len = addr.parse_prefix("::1")
      assert.equals(("00"):rep(15) .. "01", hex(net))
      assert.equals(128, len)
      net, len = addr.parse_prefix("0.0.0.0/0")
      assert.equals("00000000", hex(net))
      assert.equals(0, len)
    end)

    it("returns nil, err for bad input", function()
      for _, s in ipairs { "10.0.0.0/33", "::/129", "10.0.0.0/", "/8", "10.0.0.0/-1", "10.0.0.0/8/8",
        "10.0.0.0/ 8", "10.0.0.0/1000", "10.0.0/8", "x/8", "", "10.0.0.0/8x" } do
        local net, err = addr.parse_prefix(s)
        assert.is_nil(net, s)
        assert.matches("not a prefix", err)
        assert.truthy(err:find(format("%q", s), 1, true), err)
      end
      assert.matches("parse_prefix", misuse_error(addr.parse_prefix, 8))
    end)
  end)

  describe("compare and equal", function()
    it("sorts IPv4 before IPv6, then in numeric order", function()
      local want = { "0.0.0.0", "1.2.3.4", "9.255.255.255", "10.0.0.0", "10.0.0.1", "127.0.0.1",
        "200.1.1.1", "255.255.255.255", "::", "::1", "::ffff:1.2.3.4", "2001:db8::1",
        "2001:db8::2", "2001:db8:1::", "fe80::1", "ffff::" }
      -- shuffled with a fixed seed, mixed text and raw
      math.randomseed(7)
      local list = {}
      for i, a in ipairs(want) do
        list[i] = i % 2 == 0 and addr.parse(a) or a
      end
      for i = #list, 2, -1 do
        local j = math.random(i)
        list[i], list[j] = list[j], list[i]
      end
      table.sort(list, function(a, b) return addr.compare(a, b) < 0 end)
      for i, a in ipairs(list) do list[i] = addr.text(a) end
      assert.same(want, list)
      assert.equals(0, addr.compare("10.0.0.1", "\10\0\0\1"))
      assert.equals(-1, addr.compare("255.255.255.255", "::"))
      assert.equals(1, addr.compare("::", "255.255.255.255"))
      assert.equals(1, addr.compare("10.0.0.2", "10.0.0.1"))
    end)

    it("says whether two addresses are the same, whatever their form", function()
      assert.is_true(addr.equal("2001:DB8::1", addr.parse("2001:db8:0::1")))
      assert.is_true(addr.equal("[::1]", "::1"))
      assert.is_false(addr.equal("::1", "::2"))
      -- no implicit mapping
      assert.is_false(addr.equal("1.2.3.4", "::ffff:1.2.3.4"))
      local eq, err = addr.equal("::1", "nope!")
      assert.is_nil(eq)
      assert.matches("nope!", err, 1, true)
      assert.matches("compare", misuse_error(addr.compare, "::1", nil))
      assert.matches("equal", misuse_error(addr.equal, {}, "::1"))
    end)
  end)

  describe("set", function()
    it("finds the longest matching prefix among overlapping ones", function()
      local s = assert(addr.set { "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32",
        "2001:db8::/32", "2001:db8:1::/48", "2001:db8:1:2::/64", "2001:db8:1:2::1/128" })
      local CASES = {
        { "10.1.2.3", "10.1.2.3/32" }, { "10.1.2.4", "10.1.2.0/24" }, { "10.1.3.1", "10.1.0.0/16" },
        { "10.2.0.0", "10.0.0.0/8" }, { "11.0.0.0", false }, { "9.255.255.255", false },
        { "2001:db8:1:2::1", "2001:db8:1:2::1/128" }, { "2001:db8:1:2::2", "2001:db8:1:2::/64" },
        { "2001:db8:1:3::1", "2001:db8:1::/48" }, { "2001:db8:2::1", "2001:db8::/32" },
        { "2001:db9::", false }, { "::1", false },
        -- mapped addresses do not match IPv4 prefixes
        { "::ffff:10.1.2.3", false },
      }
      for _, c in ipairs(CASES) do
        for _, x in ipairs { c[1], addr.parse(c[1]) } do
          local hit, p = s:contains(x)
          if c[2] then
            assert.is_true(hit, c[1])
            assert.equals(c[2], p, c[1])
          else
            assert.is_false(hit, c[1])
            assert.is_nil(p)
          end
        end
      end
    end)

    it("keeps the families apart; /0 matches every address of its family", function()
      local s = assert(addr.set { "0.0.0.0/0", "192.168.0.0/16" })
      assert.same({ true, "0.0.0.0/0" }, { s:contains("8.8.8.8") })
      assert.same({ true, "192.168.0.0/16" }, { s:contains("\192\168\1\1") })
      assert.same({ false }, { s:contains("2001:db8::1") })
      assert.same({ false }, { s:contains(addr.parse("::")) })
      assert(s:add("::/0"))
      assert.same({ true, "::/0" }, { s:contains("2001:db8::1") })
      assert.same({ true, "0.0.0.0/0" }, { s:contains("1.1.1.1") })
      local s6 = assert(addr.set { "::/0" })
      assert.same({ false }, { s6:contains("1.1.1.1") })
    end)

    it("stores canonical text, host bits cleared", function()
      local s = assert(addr.set { "10.1.2.3/8", "2001:DB8:0:0::1/32" })
      assert.same({ true, "10.0.0.0/8" }, { s:contains("10.200.0.1") })
      assert.same({ true, "2001:db8::/32" }, { s:contains("2001:db8:ffff::") })
    end)

    it("grows with add and starts empty", function()
      local s = assert(addr.set {})
      assert.same({ false }, { s:contains("10.0.0.1") })
      assert.equals(s, s:add("10.0.0.0/8"))
      assert.same({ true, "10.0.0.0/8" }, { s:contains("10.0.0.1") })
      local ok, err = s:add("10.0.0.0/99")
      assert.is_nil(ok)
      assert.matches("10%.0%.0%.0/99", err)
      assert.same({ true, "10.0.0.0/8" }, { s:contains("10.0.0.1") })
    end)

    it("names the bad entry", function()
      local s, err = addr.set { "10.0.0.0/8", "2001:db8::/32", "10.0.0.0/33" }
      assert.is_nil(s)
      assert.matches("^entry 3: ", err)
      assert.matches("10%.0%.0%.0/33", err)
      s, err = addr.set { "bogus" }
      assert.is_nil(s)
      assert.matches("entry 1: .*bogus", err)
      assert.matches("entry 2 is a number", misuse_error(addr.set, { "10.0.0.0/8", 42 }))
      assert.matches("table", misuse_error(addr.set, "10.0.0.0/8"))
      local ok = assert(addr.set {})
      assert.matches("contains", misuse_error(ok.contains, ok, 42))
      assert.matches("add", misuse_error(ok.add, ok, {}))
      -- bad text to look up is runtime input
      local hit, e = ok:contains("10.0.0")
      assert.is_nil(hit)
      assert.matches("not an IP address", e)
    end)
  end)

  describe("of", function()
    it("reads src and dst of a struct sl_key, IPv6 and IPv4", function()
      local key = ffi.new("struct sl_key")
      local s6, d6 = addr.parse("2001:db8::1"), addr.parse("fe80::abcd")
      ffi.copy(key.src, s6, 16)
      ffi.copy(key.dst, d6, 16)
      key.ip_version = 6
      assert.equals(s6, addr.of(key, 0))
      assert.equals(s6, addr.of(key, "src"))
      assert.equals(d6, addr.of(key, 1))
      assert.equals(d6, addr.of(key, "dst"))
      -- the same text as the core's (flow handles' src/dst)
      assert.equals(flow.addr(key, 0), addr.text(addr.of(key, 0)))
      assert.equals(flow.addr(key, 1), addr.text(addr.of(key, 1)))
      -- through a pointer, as records hand them out
      local p = ffi.cast("const struct sl_key *", key)
      assert.equals(d6, addr.of(p, "dst"))

      ffi.fill(key, ffi.sizeof(key))
      ffi.copy(key.src, addr.parse("192.0.2.7"), 4)
      ffi.copy(key.dst, addr.parse("198.51.100.200"), 4)
      key.ip_version = 4
      assert.equals("\192\0\2\7", addr.of(key, "src"))
      assert.equals(4, #addr.of(key, 1))
      assert.equals("198.51.100.200", addr.text(addr.of(key, 1)))
      assert.equals(flow.addr(key, 1), addr.text(addr.of(key, 1)))
      local s = assert(addr.set { "198.51.100.0/24" })
      assert.same({ true, "198.51.100.0/24" }, { s:contains(addr.of(key, 1)) })
      assert.same({ false }, { s:contains(addr.of(key, 0)) })

      key.ip_version = 0
      local raw, err = addr.of(key, 0)
      assert.is_nil(raw)
      assert.matches("ip_version 0", err)
    end)

    it("raises for what is no key or no side", function()
      local key = ffi.new("struct sl_key")
      assert.matches("struct sl_key", misuse_error(addr.of, "10.0.0.1", 0))
      assert.matches("struct sl_key", misuse_error(addr.of, ffi.new("uint8_t[16]"), 0))
      assert.matches("which", misuse_error(addr.of, key, 2))
      assert.matches("which", misuse_error(addr.of, key))
    end)
  end)

  describe("against python3's ipaddress", function()
    -- Random addresses in varied text forms (uppercase, zero padded, one
    -- run of zeros compressed), fixed seed. IPv6 addresses keep one of
    -- their first five words nonzero: python writes the mapped and
    -- compatible forms differently from RFC 5952 / inet_ntop, and no
    -- network of such an address takes either form.
    local function random_v6_text()
      local w
      repeat
        w = {}
        for i = 1, 8 do
          local r = math.random()
          w[i] = r < 0.4 and 0 or r < 0.55 and math.random(0, 0xff) or math.random(0, 0xffff)
        end
      until w[1] + w[2] + w[3] + w[4] + w[5] > 0
      local fmt = math.random() < 0.3 and "%04X" or math.random() < 0.5 and "%x" or "%X"
      local parts = {}
      for i = 1, 8 do parts[i] = format(fmt, w[i]) end
      local text = table.concat(parts, ":")
      if math.random() < 0.6 then
        -- compress the first run of zero fields
        local a, b
        for i = 1, 8 do
          if w[i] == 0 then
            a = a or i
            b = i
          elseif a then
            break
          end
        end
        if a then
          text = table.concat(parts, ":", 1, a - 1) .. "::" .. table.concat(parts, ":", b + 1, 8)
        end
      end
      return text, w
    end

    local function random_v4_text()
      local b = {}
      for i = 1, 4 do
        local r = math.random()
        b[i] = r < 0.1 and 0 or r < 0.2 and 255 or math.random(0, 255)
      end
      return format("%d.%d.%d.%d", b[1], b[2], b[3], b[4])
    end

    local PY = [[
import ipaddress, sys
cases, prefixes, queries = (open(p).read().split("\n") for p in sys.argv[1:4])
out = []
for line in cases:
    if not line: continue
    a, l = line.split(" ")
    ip = ipaddress.ip_address(a)
    net = ipaddress.ip_network("%s/%s" % (a, l), strict=False)
    out.append("%s %s %s %s" % (ip.packed.hex(), str(ip), net.network_address.packed.hex(), net.with_prefixlen))
nets = [ipaddress.ip_network(p, strict=False) for p in prefixes if p]
for q in queries:
    if not q: continue
    ip = ipaddress.ip_address(q)
    best = None
    for n in nets:
        if n.version == ip.version and ip in n and (best is None or n.prefixlen > best.prefixlen):
            best = n
    out.append(best.with_prefixlen if best else "-")
print("\n".join(out))
]]

    local cases, prefixes, queries = {}, {}, {}
    local truth

    setup(function()
      math.randomseed(20240611)
      for i = 1, 400 do
        local v6 = i % 2 == 0
        local text = v6 and random_v6_text() or random_v4_text()
        local max = v6 and 128 or 32
        local r = math.random()
        local len = r < 0.05 and 0 or r < 0.1 and max or math.random(0, max)
        cases[i] = { text = text, len = len }
      end
      -- prefixes of some of the addresses (nested ones among them: the
      -- same address at several lengths), queries inside them and random
      for i = 1, 300 do
        local c = cases[math.random(#cases)]
        local max = c.text:find(":", 1, true) and 128 or 32
        prefixes[i] = c.text .. "/" .. (math.random() < 0.1 and math.random(0, max) or
          math.random(max == 32 and 8 or 16, max))
      end
      for i = 1, 400 do
        if i % 2 == 0 then
          queries[i] = cases[math.random(#cases)].text
        else
          queries[i] = i % 4 == 1 and random_v4_text() or random_v6_text()
        end
      end
      local dir = run.tmpdir()
      local lines = {}
      for i, c in ipairs(cases) do lines[i] = c.text .. " " .. c.len end
      run.spit(dir .. "/cases", table.concat(lines, "\n") .. "\n")
      run.spit(dir .. "/prefixes", table.concat(prefixes, "\n") .. "\n")
      run.spit(dir .. "/queries", table.concat(queries, "\n") .. "\n")
      run.spit(dir .. "/truth.py", PY)
      local r = run.sh(run.PLAIN .. "python3 truth.py cases prefixes queries", dir)
      assert(r.code == 0, run.describe(r))
      truth = {}
      for line in r.out:gmatch("[^\n]+") do truth[#truth + 1] = line end
      assert(#truth == #cases + #queries, run.describe(r))
    end)

    it("agree on bytes, text, networks and prefix text", function()
      for i, c in ipairs(cases) do
        local raw_hex, text, net_hex, net_text = truth[i]:match("^(%x+) (%S+) (%x+) (%S+)$")
        assert.truthy(raw_hex, truth[i])
        local what = c.text .. "/" .. c.len
        local raw = assert(addr.parse(c.text), what)
        assert.equals(raw_hex, hex(raw), what)
        assert.equals(text, addr.text(raw), what)
        assert.equals(text, addr.text(c.text), what)
        assert.equals(net_hex, hex(addr.prefix(c.text, c.len)), what)
        assert.equals(net_hex, hex(addr.prefix(raw, c.len)), what)
        assert.equals(net_text, addr.prefix_text(raw, c.len), what)
        local net, len = addr.parse_prefix(what)
        assert.equals(net_hex, hex(net), what)
        assert.equals(c.len, len, what)
        assert.equals(unhex(net_hex), net)
      end
    end)

    it("agree on the longest match in a set of the prefixes", function()
      local s = assert(addr.set(prefixes))
      local hits = 0
      for i, q in ipairs(queries) do
        local want = truth[#cases + i]
        local x = i % 3 == 0 and assert(addr.parse(q)) or q
        local hit, p = s:contains(x)
        if want == "-" then
          assert.is_false(hit, q)
        else
          hits = hits + 1
          assert.is_true(hit, q)
          assert.equals(want, p, q)
        end
      end
      -- the queries drawn from the cases must often hit, or this proves little
      assert.is_true(hits > 100, "only " .. hits .. " hits")
    end)
  end)

  describe("lookup cost", function()
    it("is measured on a set of 1000 mixed prefixes", function()
      math.randomseed(99)
      local function rnd(n)
        local t = {}
        for i = 1, n do t[i] = char(math.random(0, 255)) end
        return table.concat(t)
      end
      local list = {}
      for i = 1, 500 do list[#list + 1] = addr.prefix_text(rnd(4), math.random(8, 32)) end
      for i = 1, 500 do list[#list + 1] = addr.prefix_text(rnd(16), math.random(16, 128)) end
      local s = assert(addr.set(list))
      -- half inside a prefix of the set (random host bits), half random
      local raws, texts = {}, {}
      for i = 1, 1000 do
        local x
        if i % 2 == 0 then
          local net, len = addr.parse_prefix(list[math.random(#list)])
          local host = rnd(#net)
          -- the network's bits, then random ones
          x = ""
          for j = 1, #net do
            local keep = math.max(0, math.min(8, len - (j - 1) * 8))
            local m = 256 - 2 ^ (8 - keep)
            x = x .. char(bit.bor(bit.band(byte(net, j), m), bit.band(byte(host, j), 255 - m)))
          end
        else
          x = rnd(i % 4 == 1 and 4 or 16)
        end
        raws[i], texts[i] = x, addr.text(x)
      end
      local function time(xs)
        local rounds, hits = 300, 0
        local t0 = os.clock()
        for _ = 1, rounds do
          for i = 1, #xs do
            if s:contains(xs[i]) then hits = hits + 1 end
          end
        end
        return (os.clock() - t0) * 1e9 / (rounds * #xs), hits / rounds
      end
      time(raws) -- warm up (JIT)
      local ns_raw, hits = time(raws)
      local ns_text = time(texts)
      -- inside a prefix means a hit
      assert.is_true(hits >= 500)
      print(format("\naddr set of %d prefixes: contains %.0f ns (raw), %.0f ns (text); %d of 1000 hit",
        #list, ns_raw, ns_text, hits))
    end)
  end)
end)
