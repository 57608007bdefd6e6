-- gpurent.money: amounts of money as exact decimals for JSON. A cost computed in
-- floating point (price per hour x seconds / 3600) is 0.087999999999999995 when
-- printed in full; JSON output carries it instead as a decimal STRING rounded to
-- the provider API's unit, the thousandth of a yuan (its prices are integers in 1/1000
-- yuan): "0.088". A string, because JSON numbers are read back as binary floats by
-- most parsers and the digits would drift again; a consumer that wants a number
-- converts it knowingly (jq: `.accrued_cost | tonumber`). Human text keeps cents.
--
--   money.PLACES                       3 (thousandths of the currency unit)
--   money.decimal(x [, places]) -> "0.088" | nil (x nil)
--   money.fields(t, {"cost", ...})     t[k] = money.decimal(t[k]) for each k present; t
local money = {PLACES = 3}

-- Round half away from zero to `places` decimals, in integers so no float prints.
function money.decimal(x, places)
  if x == nil then return nil end
  if type(x) ~= "number" or x ~= x or x == math.huge or x == -math.huge then
    error("money.decimal: not a finite amount: " .. tostring(x), 2)
  end
  places = places or money.PLACES
  local scale = math.tointeger(10 ^ places)
  local sign = x < 0 and "-" or ""
  local n = math.floor(math.abs(x) * scale + 0.5)
  n = math.tointeger(n) or error("money.decimal: amount too large: " .. tostring(x), 2)
  if n == 0 then sign = "" end
  if places == 0 then return sign .. n end
  return string.format("%s%d.%0" .. places .. "d", sign, n // scale, n % scale)
end

-- Convert the named money fields of a table in place (absent fields stay absent).
function money.fields(t, names)
  for _, k in ipairs(names) do
    if type(t[k]) == "number" then t[k] = money.decimal(t[k]) end
  end
  return t
end

return money
