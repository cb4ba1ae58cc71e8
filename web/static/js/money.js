// The dashboard's money format, the twin of tokenlens/money.py (the rule is written there; a test runs both on
// a table of amounts): "—" for none, "$0.00", cents with thousands separators at and above $1 ("$1,234.56"),
// at least two significant digits below $1 ("$0.0014", "$0.000011"), "-$2.50" for negative amounts.
// Intl.NumberFormat rounds half away from zero on the shortest decimal of the float, as the Python side does.

const LOCALE = "en-US";
const MAX_DECIMALS = 20;
const TINY = `<$0.${"0".repeat(MAX_DECIMALS - 1)}1`;
const twoDigits = new Intl.NumberFormat(LOCALE, { notation: "scientific", maximumSignificantDigits: 2 });
const fixed = new Map();

export function usdDecimals(amount) {
  const value = Math.abs(Number(amount));
  if (value === 0) return 2;
  // the exponent of the amount rounded to two significant digits (0.0995 -> 1.0E-1 -> -1)
  const exponent = Number(twoDigits.format(value).split("E")[1]);
  return Math.max(2, 1 - exponent);
}

export function formatUsd(amount) {
  if (amount === null || amount === undefined || amount === "") return "—";
  const value = Number(amount);
  if (!Number.isFinite(value)) return "—";
  let sign = value < 0 ? "-" : "";
  const decimals = usdDecimals(value);
  if (decimals > MAX_DECIMALS) return sign + TINY;
  if (!fixed.has(decimals)) {
    fixed.set(decimals, new Intl.NumberFormat(LOCALE, { minimumFractionDigits: decimals, maximumFractionDigits: decimals }));
  }
  let text = fixed.get(decimals).format(Math.abs(value));
  if (/^[0.,]*$/.test(text)) sign = "";
  if (decimals > 2) {
    const [whole, fraction] = text.split(".");
    text = `${whole}.${fraction.replace(/0+$/, "").padEnd(2, "0")}`;
  }
  return `${sign}$${text}`;
}
