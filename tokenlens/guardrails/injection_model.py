"""The statistical half of the injection detector: a logistic regression over hashed token and character n-grams.

Text is normalised first (`normalise`: Unicode compatibility forms, accents, homoglyphs, zero-width and
direction marks, case, digits used as letters where they touch a letter, letter-spaced words; the ideographic
full stop and comma read as "." and ",") and payloads hidden in base64, base32, hex (spaced or not), URL escapes,
ROT13, a Caesar shift, reversed text (whole, or word by word) or glued strings ("a" + "b", or the quoted pieces
of `x = "..."; y = "..."` joined) are decoded and appended (bounded: a few payloads, short texts only for the
whole-text readings). Tokens are runs of letters and
digits (any non-ASCII byte counts as a letter, so other scripts tokenise by spaces too) and single punctuation
marks; each token contributes the hash of its first five characters (a crude stem) and the bigrams and trigrams
of those stems; a token whose stem is in the `CONCEPTS` lexicon, or a `WIDE_CONCEPTS` word found in text of
other scripts (unspaced Chinese, Japanese, Thai; Korean, Cyrillic, Greek, Arabic, Hebrew, Devanagari), also
contributes its concept and the bigrams, trigrams and near pairs of the sequence of concepts. Character
trigrams and 5-grams of the text with spaces and punctuation squeezed out (and bigrams of CJK characters) read
what tokens cannot split. All of it is computed with numpy over the whole text at once: no Python loop per
token.

A text's score is the logistic function of the weights of its features, divided by the square root of their
number; a text longer than `WINDOW` tokens is scored on every window of each size in `SCALES` and the best one
counts, so an attack buried in a long document is not diluted by it. The weights are trained by
`scripts/train_injection.py` on the whole of `tests/data/guardrails/injection_corpus.jsonl` and shipped as
`injection_model.npz` next to this module (read once, at import).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

MODEL_PATH = Path(__file__).with_name("injection_model.npz")
WINDOW = 96  # tokens: a longer text is scored window by window
SCALES = (
    16,
    32,
    64,
    96,
)  # window sizes (tokens) of a long text: a short attack is not diluted by its neighbours
STEM = 5  # characters of a token's stem feature
CHAR_NGRAMS = (3, 5)  # lengths of the character n-grams (code points, spaces and punctuation squeezed out)

_U64 = np.uint64
_P = 1_000_003  # polynomial hash base (odd, so it is invertible modulo 2**64)
_P_INV = pow(_P, -1, 2**64)
_SEEDS = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD]
    + [0xC4CEB9FE1A85EC53, 0x27D4EB2F165667C5, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9, 0x2545F4914F6CDD1D],
    dtype=_U64,
)
_MIX = _U64(0x9E6C63D0676A9A99)
_K2 = _U64(0x100000001B3)

# Byte classes: 0 space, 1 word (letters, digits, any non-ASCII byte), 2 punctuation (a token each),
# 3 line break (a token each).
_CLASS = np.zeros(256, dtype=np.int8)
for _b in range(256):
    _ch = chr(_b)
    if _b >= 0x80 or _ch.isalnum():
        _CLASS[_b] = 1
    elif _ch == "\n":
        _CLASS[_b] = 3
    elif not _ch.isspace():
        _CLASS[_b] = 2

_QUOTE = np.zeros(256, dtype=bool)
_QUOTE[[0x22, 0x60]] = True  # " and `; typographic quotes become " in `normalise`

_CLASS_TABLE = bytes(int(c) & 0xFF for c in _CLASS)
_WORD_TABLE = bytes(1 if c == 1 else 0 for c in _CLASS)
_QUOTE_TABLE = bytes(1 if q else 0 for q in _QUOTE)

# Digits written for letters ("1gn0r3"), applied to the lowered bytes where a digit touches a letter (`_leet`).
_LEET = bytes.maketrans(b"013457", b"oieast")
_LEET_DIGITS = bytes(1 if chr(b) in "013457" else 0 for b in range(256))

_ZERO_WIDTH = dict.fromkeys(
    [0x00AD, 0x034F, 0x061C, 0x180E, *range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2070)]
    + [0xFEFF, *range(0xE0000, 0xE0080)],
    None,
)
_HOMOGLYPHS = str.maketrans(
    {
        # Cyrillic
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
        "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w",
        "ɡ": "g", "ʏ": "y", "ɪ": "i", "ı": "i", "ł": "l", "ø": "o", "ß": "ss", "æ": "ae", "œ": "oe",
        # Greek
        "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
        "υ": "u", "χ": "x", "ω": "w", "ς": "s", "σ": "s", "μ": "u",
        # Latin small capitals and letters with hooks (lower-cased forms)
        "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ꜰ": "f", "ʜ": "h", "ᴊ": "j", "ᴋ": "k", "ʟ": "l",
        "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w",
        "ᴢ": "z", "ɩ": "i", "ɠ": "g", "ɲ": "n", "є": "e", "ƥ": "p", "ɣ": "v", "ʋ": "u", "ƨ": "s", "ƭ": "t",
        "ƈ": "c", "ɗ": "d", "ƙ": "k", "ɱ": "m", "ɓ": "b", "ƒ": "f", "ɦ": "h", "ʝ": "j", "ɾ": "r", "ʂ": "s",
    }
)  # fmt: skip
_QUOTES = str.maketrans(dict.fromkeys("“”„«»‟", '"'))
_COMBINING = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")
_SPACED = re.compile(r"(?<![a-z])[a-z]([ .\-_*|/])[a-z](?:\1[a-z])+(?![a-z])")
_SPACED_SEP = re.compile(r"[ .\-_*|/]")
_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/]{16,}={0,2}")
_HEX_RUN = re.compile(rb"(?:[0-9a-fA-F]{2} ?){7,}[0-9a-fA-F]{2}")  # "72 65 76" too
_BASE32_RUN = re.compile(rb"[A-Z2-7]{16,}=*")
_URL_ESCAPE = re.compile(r"%[0-9a-fA-F]{2}")
_BASE64_CHARS = bytes(
    0x61 if chr(i).isascii() and (chr(i).isalnum() or chr(i) in "+/") else 0x20 for i in range(256)
)
_DECODE_HINTS = (
    b"base64", b"b64", b"decod", b"encod", b"hex", b"rot13", b"rot-13", b"cipher", b"revers", b"right to left",
    b"backwards", b"caesar", b"shift", b"rotat",
)  # fmt: skip
_TEXT_HINTS = (
    b"rot13", b"rot-13", b"revers", b"right to left", b"backwards", b"caesar", b"shift", b"rotat",
)  # fmt: skip  # need no base64 or hex run
_SHIFT_HINTS = (b"caesar", b"shift", b"rotat")
# Words that tell a Caesar-shifted reading from noise (the shift with most of them is kept, if it has two).
_COMMON = re.compile(
    rb"\b(?:the|you|your|and|all|ignore|instructions|rules|system|prompt|reveal|secret|previous|now|tell|me|show|"
    rb"print|hidden|password|forget|are|with|what|this|of|to|is)\b"
)
_CONCAT = re.compile(r"[\"']\s*\+\s*[\"']")  # "forget " + "your rules": strings glued together
_QUOTED = re.compile(r"[\"']([^\"'\n]{1,80})[\"']")
MAX_DECODED = 5
MAX_TEXT_DECODE = 8192  # bytes: longer texts are not re-read whole as ROT13 or reversed


def _unspace(m: re.Match[str]) -> str:
    return _SPACED_SEP.sub("", m.group(0))


def _translate(text: str, table: dict[int, Any]) -> str:
    """`text.translate(table)` for non-ASCII text, fast: `str.translate` raises and catches a LookupError in C
    for every character missing from a dict table (~0.2 us each: 20 ms for 100 KB of markdown), so the table
    is narrowed to the characters present, each mapped (to itself when the table has no entry)."""
    present = {ord(c) for c in set(text)}
    if present.isdisjoint(table):
        return text
    return text.translate({k: table.get(k, k) for k in present})


def normalise(text: str, flags: set[str] | None = None) -> str:
    """Lower-case text with compatibility forms, accents, homoglyphs and invisible characters folded away;
    `flags` collects the tricks found (`invisible_characters`, `homoglyphs`)."""
    if text.isascii():
        return text.lower()
    folded = unicodedata.normalize("NFKD", text)
    visible = _translate(folded, _ZERO_WIDTH)
    if flags is not None and len(visible) != len(folded):
        flags.add("invisible_characters")
    lowered = _COMBINING.sub("", visible).lower()
    out = _translate(lowered, _HOMOGLYPHS)
    if flags is not None and out != lowered and re.search(r"[a-z][^\x00-\x7f]|[^\x00-\x7f][a-z]", lowered):
        flags.add("homoglyphs")
    # the ideographic full stop and comma read as "." and "," (NFKD folds the full-width forms of the others), so
    # that text without spaces still falls into sentence-sized tokens
    return _translate(out, _QUOTES).replace("。", ".").replace("、", ",")


def _spaced_letters(data: bytes) -> bool:
    """Whether three one-letter words stand one separator apart somewhere ("i g n", "i.g.n"): a numpy test, so
    the regex that joins them runs only on the texts that have some."""
    a = np.frombuffer(data, dtype=np.uint8)
    if len(a) < 7:
        return False
    letter = (a >= 0x61) & (a <= 0x7A)
    sep = (a == 0x20) | (a == 0x2E) | (a == 0x2D) | (a == 0x5F) | (a == 0x2A)
    alone = letter[1:-1] & ~letter[:-2] & ~letter[2:]  # a letter with no letter on either side (index + 1)
    m = len(a) - 6
    hit = alone[:m] & sep[2 : 2 + m] & alone[2 : 2 + m] & sep[4 : 4 + m] & alone[4 : 4 + m]
    return bool(hit.any())


def decoded_payloads(raw: bytes) -> list[str]:
    """Text hidden in base64, base32, hex or URL escapes, or the ROT13, Caesar or reversed reading, when the text
    mentions an encoding."""
    lowered = raw.lower()
    if not any(h in lowered for h in _DECODE_HINTS):
        return []
    run = b"a" * 16 in raw.translate(_BASE64_CHARS)
    if not run and b"hex" not in lowered and b"%" not in raw and not any(h in lowered for h in _TEXT_HINTS):
        return []
    out: list[str] = []
    if run:
        for m in _BASE64_RUN.finditer(raw):
            blob = m.group(0)
            try:
                decoded = base64.b64decode(blob + b"=" * (-len(blob) % 4), validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                continue
            if sum(c.isalpha() or c == " " for c in decoded) >= 0.8 * len(decoded):
                out.append(decoded)
            if len(out) >= MAX_DECODED:
                return out
        if b"base32" in lowered or b"b32" in lowered:
            for m in _BASE32_RUN.finditer(raw):
                blob = m.group(0).rstrip(b"=")
                try:
                    decoded = base64.b32decode(blob + b"=" * (-len(blob) % 8)).decode("utf-8")
                except (binascii.Error, ValueError):
                    continue
                if decoded.isprintable():
                    out.append(decoded)
    if b"hex" in lowered:
        for m in _HEX_RUN.finditer(raw):
            try:
                decoded = bytes.fromhex(m.group(0).decode()).decode("utf-8")
            except ValueError:
                continue
            if decoded.isprintable():
                out.append(decoded)
            if len(out) >= MAX_DECODED:
                return out
    if len(raw) > MAX_TEXT_DECODE:
        return out  # a whole long text re-read as ROT13 or backwards doubles its cost and hides nothing new
    text = raw.decode("utf-8", "replace")
    if b"%" in raw and _URL_ESCAPE.search(text):
        out.append(urllib.parse.unquote(text))
    if b"rot13" in lowered or b"rot-13" in lowered:
        out.append(codecs.decode(text, "rot13"))
    if b"revers" in lowered or b"right to left" in lowered or b"backwards" in lowered:
        out.append(text[::-1])
        out.append(" ".join(word[::-1] for word in text.split()))  # each word backwards, in their order
    if any(h in lowered for h in _SHIFT_HINTS):
        best = _caesar(lowered)
        if best:
            out.append(best)
    return out


def _caesar(lowered: bytes) -> str:
    """The reading of lower-cased text shifted back by the Caesar shift (1..25) that yields the most common
    English words, if it yields at least two more than the text as written; else ""."""
    letters = b"abcdefghijklmnopqrstuvwxyz"
    base = len(_COMMON.findall(lowered))
    best, best_count = b"", base + 1
    for k in range(1, 26):
        shifted = lowered.translate(bytes.maketrans(letters, letters[k:] + letters[:k]))
        count = len(_COMMON.findall(shifted))
        if count > best_count:
            best, best_count = shifted, count
    return best.decode("utf-8", "replace")


def prepare(text: str, flags: set[str] | None = None, *, decode: bool = True) -> bytes:
    """The bytes the model reads: the normalised text, then any decoded payload on lines of its own. `flags`
    collects the obfuscation found on the way (`decoded_payload`, `spaced_letters` and those of `normalise`).
    `decode=False` leaves the payloads out (a long text is searched for them only when `anchor_ranges` sees a
    word that asks for decoding)."""
    if len(text) <= MAX_TEXT_DECODE and "+" in text and _CONCAT.search(text):  # long texts: as for ROT13
        text = text + "\n" + _CONCAT.sub("", text)
    elif len(text) <= MAX_TEXT_DECODE and ("+" in text or "join" in text):  # x = "ignore the"; y = " rules"
        pieces = _QUOTED.findall(text)
        if len(pieces) >= 2:
            text = text + "\n" + "".join(pieces)
    raw = text.encode("utf-8", "surrogatepass")
    payloads = decoded_payloads(raw) if decode and len(raw) >= 16 else []
    if payloads and flags is not None:
        flags.add("decoded_payload")
    norm = normalise("\n".join([text, *payloads]) if payloads else text, flags)
    data = norm.encode("utf-8", "surrogatepass")
    if _spaced_letters(data):
        unspaced = _SPACED.sub(_unspace, norm)
        if unspaced != norm:
            if flags is not None:
                flags.add("spaced_letters")
            data = unspaced.encode("utf-8", "surrogatepass")
    return _leet(data)


def _leet(data: bytes) -> bytes:
    """Digits written for letters read as those letters ("1gn0r3" is "ignore"), only where a digit touches a
    letter: numbers, dates and versions ("2023-09-30") stay digits."""
    a = np.frombuffer(data, dtype=np.uint8)
    digit = np.frombuffer(data.translate(_LEET_DIGITS), dtype=np.bool_)
    if not digit.any():
        return data
    letter = (a >= 0x61) & (a <= 0x7A)
    near = np.zeros(len(a), dtype=bool)
    near[:-1] |= letter[1:]
    near[1:] |= letter[:-1]
    at = np.flatnonzero(digit & near)
    if len(at) == 0:
        return data
    out = a.copy()
    out[at] = np.frombuffer(data.translate(_LEET), dtype=np.uint8)[at]
    return out.tobytes()


# Concepts: the families' vocabulary in a few languages, matched on a token's first five characters after
# `prepare` (so "disregarding" and "disregard" are one concept, "ignoriere" and "ignora" too). The model sees
# each concept and the bigrams and trigrams of the sequence of concept tokens, whatever stands between them:
# "ignore all of the earlier instructions" and "set aside whatever you were told before" share `disown ...
# prior`. Which combinations matter, and how much, is learnt.
CONCEPTS: dict[str, str] = {
    "disown": "strunta annullate annulla anuladas annulees desconsidera quen unutma negeer ignore ignoring ignora ignorez ignoriere ignorar negeer zignoruj disregard forget forgot "
    "oublie olvida vergiss vergeet dimentica esqueca overlook neglect discard scrap abandon dismiss cancel "
    "void revoke rescind erase wipe delete reset override overrule supersede bypass skip disobey unlearn "
    "obsolete outdated invalid null nevermind aside missachte descarta deleted revoked cancelled zapomnij zapomen "
    "felejtsd uita unohda lupakan abaikan quen sahau puuza glem unutma ignorera ohita hagyd zabud",
    "prior": "previous prior earlier above before preceding precedent initial original beginning start "
    "top anterior vorherigen bisherigen precedenti vorige earlier setup poprzednie predchozi korabbi "
    "anterioare aiemmat sebelumnya truoc awali tidligere onceki eddigi",
    "rules": "polecenia yonergeleri linee huong opgedragen consignas instructions instruction rules rule guidelines directions directives orders prompt prompts "
    "programming configuration guidance constraints restrictions policy policies commands consignes "
    "regles reglas anweisungen regeln istruzioni regole instrucoes instrucciones instructies regels "
    "richtlijnen directrices told guardrails limits filters instrukcje pokyny utasitasokat instructiunile "
    "ohjeet instruksi maagizo instruksjoner talimatlari pravidla zasady szabalyait regulile saannot aturan "
    "sheria regler kurallarini",
    "you": "you your yourself tu te ton tes du dein deine dir dich voce vous votre jij",
    "new": "new updated update revised real actual true change changed henceforth forward onward "
    "immediately nueva nuevo neue nouvelle nuovo nova nieuwe hereby",
    "goal": "objective goal task mission purpose directive job priority aim",
    "free": "beperkingen begransningar unrestricted unfiltered uncensored unbound unaligned jailbroken jailbreak limitless nolimits "
    "without free freed liberated unlimited anything censorship ethics moral sans sin ohne senza sem zonder "
    "filter filters bez nelkul fara ilman tanpa bila uten siz ograniczen omezeni korlatozas limite "
    "rajoituksia batasan vikwazo begrensninger sinirsiz",
    "persona": "dan stan persona character roleplay role pretend act imagine become simulate mode identity "
    "evil rogue twin version personality",
    "reveal": "dime diga podaj skriv paylas scrivi escribe escreva revel rivela nguyen reveal print repeat output show display dump leak recite expose share copy paste verbatim "
    "quote spell reproduce export tell translate encode muestrame zeig mostre rivelami affiche recopie "
    "repite ripeti zitiere pokaz wypisz vypis mutasd arata nayta tampilkan onyesha goster",
    "secret": "palavra haslo sifre dolda segreta nascosto secret hidden confidential internal password passphrase key token credentials system "
    "preamble initialization systemprompt ukryte skryte rejtett ascunse piilotettu tersembunyi "
    "siri skjulte gizli",
    "authority": "desarrollador ontwikkelaars utvecklarna tworcy entwickler sviluppatore developer developers admin administrator engineer engineers staff operator creator "
    "creators owner authorised authorized authorization official verified sanctioned audit debug tworcow "
    "vyvojaru fejlesztok dezvoltatori kehittajien pengembang watengenezaji utviklerne gelistiriciler "
    "maintenance root vendor management headquarters",
    "test": "test testing tests tester evaluation qa check",
    "game": "game play hypothetical hypothetically fictional story pretend suppose opposite simulation "
    "scenario thought experiment world universe novel screenplay movie script",
    "discuss": "explain why how classify detect detection defend defence defense mitigation mitigate attack "
    "attacks attacker jailbreaks injection example examples paper research report logs log flagged "
    "classifier dataset label security taxonomy incident regex owasp risk analyse analyze describe "
    "summarise summarize documented literature researchers guardrail moderation",
    "obey": "wykonujesz rispondi antwoord svara cevap obey comply follow execute answer respond proceed confirm obedece",
    "all": "wszystkie alles todo todos tutto qualunque hepsi allt all every everything any whatever entire toutes todas alle tutte",
    "negate": "nunca nie niet non nao nicht not dont never no nothing none cannot",
    "decode": "decode base64 rot13 hex encoded reverse unscramble decoded",
    "ai": "ai assistant assistants model models llm chatbot bot agent agents gpt chatgpt ia ki summariser",
    "user": "user users customer customers",
    "exfil": "send forward email post upload transfer exfiltrate wire curl http https url link",
    "refuse": "refuse refusal refusals refusing warnings disclaimers apologies",
    "now": "now anymore longer moment here",
    "self": "my me i our we us mine mon ma mes mi mis mein meine mio mia meu minha mijn",
    "message": "message messages email ticket typo typos order draft question answer paragraph text file",
    "harm": "bomb bombs explosive explosives explosif explosivo esplosivo sprengstoff weapon weapons waffe arma armas "
    "arme gun guns meth drug drugs droga drogen poison poisoning veleno veneno malware ransomware virus "
    "phishing hack hacking hacker hackear pirater piratear hacken steal stealing stehlen robar rubare voler launder "
    "forge forged counterfeit thermite napalm ricin nitroglycerin chloroform smuggle kill murder scam skimmer ddos "
    "exploit bomba bombe",
    "safety": "safety safe security secure sicherheit seguridad securite sicurezza bezpieczenstwa veiligheid "
    "guvenlik keamanan sakerhet",
    "detail": "detailed detail details precise precisely exact exactly step steps accurate accurately recipe "
    "quantities stepwise",
}


# The concepts in scripts whose words a token's five-byte stem cannot hold: unspaced Chinese, Japanese and Thai,
# and scripts of two- and three-byte letters (Korean, Cyrillic, Greek, Arabic, Hebrew, Devanagari). Matched as
# substrings of the prepared text (`_wide_concepts`), each hit a concept token at the token it falls in.
WIDE_CONCEPTS: dict[str, str] = {
    "disown": "忽略 忽視 忽视 无视 無視 忘记 忘記 忘掉 忘れ 不要管 不要理会 别管 作废 作廢 無効 无效 無效 取り消 무시 잊어 잊고 "
    "버려 ลืม เพิกเฉย ละเว้น игнор забудь забыть не обращай отмен забуд ігнор تجاهل انس ألغ भूल अनदेखा नजरअंदाज "
    "αγνόη ξέχασ ξεχάσ התעלם שכח תשכח فراموش",
    "prior": "之前 以前 先前 上面 上述 前面 最初 原来 原來 原本 最开始 最開始 これまで 上記 이전 앞에서 위의 지금까지 처음 "
    "ก่อนหน้า предыдущ ранее выше прежн попередн السابق أعلاه पिछल पहले προηγούμεν הקודמ قبلی",
    "rules": "指令 指示 规则 規則 规定 規定 准则 準則 设定 設定 提示词 提示詞 命令 ルール プロンプト ガイドライン 규칙 지시 지침 "
    "설정 명령 프롬프트 คำสั่ง กฎ правил инструкц указани промпт настройк قواعد تعليمات إرشادات موجه नियम निर्देश "
    "οδηγί κανόν εντολ הוראות הנחיות חוקים دستورالعمل قوانین",
    "secret": "系统 系統 隐藏 隱藏 秘密 密码 密碼 机密 機密 システム 隠さ 隠れ パスワード 시스템 숨겨 비밀 ระบบ ซ่อน รหัสผ่าน "
    "системн скрыт секрет пароль النظام المخف سري كلمة المرور सिस्टम छुप गुप्त पासवर्ड συστήματ κρυφ μυστικ מערכת "
    "נסתר סוד סיסמ",
    "reveal": "告诉 告訴 显示 顯示 输出 輸出 打印 发给 發給 贴出 复制 複製 原文 逐字 表示 見せ 教え 書き出 出力 全文 보여 알려 "
    "출력 그대로 แสดง บอก покажи выведи повтори дословно напиши отправ اكشف اعرض اطبع اكتب أرسل दिखा बता लिख "
    "δείξ αποκάλυψ הצג חשוף הראה כתוב",
    "free": "没有任何 没有限制 無限制 不受 限制 约束 約束 审查 審查 过滤 過濾 制限 フィルター 検閲 제한 필터 검열 ข้อจำกัด "
    "ограничени цензур фильтр قيود بدون رقابة प्रतिबंध बिना περιορισμ χωρίς הגבל בלי سانسور محدودیت",
    "persona": "假装 假裝 扮演 角色 ふり 演じ なりき 역할 척해 연기해 แกล้ง สวมบทบาท притвор представь роль تظاهر "
    "दिखावा भूमिका προσποι העמד",
    "authority": "开发者 開發者 开发人员 開發人員 管理员 管理員 开发团队 開発者 開発チーム 管理者 운영자 개발자 관리자 นักพัฒนา "
    "ผู้ดูแล разработчик администратор создател المطور المسؤول مطور डेवलपर व्यवस्थापक προγραμματιστ διαχειριστ "
    "מפתח מנהל",
    "test": "测试 測試 テスト 테스트 ทดสอบ тест اختبار परीक्षण δοκιμ בדיקה",
    "game": "游戏 遊戲 ゲーム 게임 เกม игр لعبة खेल παιχνίδ משחק 故事 物語 이야기 假设 假設 仮に 가정",
    "new": "新的 新しい 새로운 ใหม่ нов جديد नया νέ חדש 从现在 從現在 今から これから 지금부터 이제 ตอนนี้ с этого "
    "теперь من الآن अब से από τώρα מעכשיו",
    "goal": "任务 任務 目标 目標 使命 タスク 目的 임무 목표 задач цель مهمة هدف कार्य लक्ष्य στόχ αποστολ משימה מטרה",
    "obey": "服从 服從 遵守 听我 聽我 照做 従って 従え 따라 복종 ทำตาม подчин выполн слушай أطع نفذ पालन υπάκου ציית",
    "ai": "人工智能 人工智慧 助手 模型 人工知能 アシスタント モデル 인공지능 어시스턴트 모델 ปัญญาประดิษฐ์ нейросет "
    "модель ассистент الذكاء مساعد मॉडल μοντέλο בינה",
    "you": "你 您 あなた 너 당신 คุณ ты тебе тебя вы أنت تم तुम आप εσύ σου אתה לך",
    "all": "所有 全部 一切 すべて 全て 모든 전부 ทั้งหมด все всё всех جميع كل सभी όλ כל",
    "discuss": "为什么 為什麼 解释 解釋 分析 攻击 攻擊 例子 なぜ 説明 攻撃 왜 설명 분석 공격 อธิบาย объясни почему атак "
    "пример لماذا اشرح هجوم क्यों समझा हमला εξήγησ γιατί επίθεσ הסבר למה מתקפה",
    "message": "消息 信息 邮件 郵件 メール メッセージ 메시지 메일 ข้อความ сообщени письм رسالة البريد संदेश ईमेल μήνυμα "
    "הודעה מייל",
    "harm": "炸药 炸藥 炸弹 炸彈 武器 毒品 毒药 毒藥 黑客 入侵 破解 盗取 盜取 爆弾 爆発物 ハッキング 盗む 侵入 폭탄 폭발물 무기 "
    "마약 해킹 훔치 взлом взрывчат оружи наркот бомб украсть ระเบิด อาวุธ ยาเสพติด แฮก سلاح متفجر اختراق قنبلة "
    "हथियार विस्फोटक हैक όπλ εκρηκτικ χακ נשק פצצה פריצה",
    "safety": "安全 セキュリティ 안전 보안 безопасн ความปลอดภัย أمان الأمان सुरक्षा ασφάλει ασφάλεια בטיחות אבטחה "
    "امنیت",
    "detail": "详细 詳細 步骤 步驟 具体 詳しく 手順 자세히 단계별 구체적 подробно по шагам пошаг بالتفصيل خطوة "
    "विस्तार λεπτομερ בפירוט",
}
_WIDE: list[re.Pattern[bytes]] = []


def _wide_concepts(data: bytes) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Byte offsets and concept numbers of the `WIDE_CONCEPTS` words found in prepared text."""
    if not _WIDE:
        number = {name: i for i, name in enumerate(CONCEPTS)}
        words: dict[bytes, int] = {}
        for name, text in WIDE_CONCEPTS.items():
            for word in text.split():
                words.setdefault(prepare(word), number[name])
        _WIDE.append(re.compile(b"(" + _trie(sorted(words)) + b")"))
        _WIDE_IDS.update(words)
    hits = [(m.start(), _WIDE_IDS[m.group(1)]) for m in _WIDE[0].finditer(data)]
    if not hits:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    arr = np.array(hits, dtype=np.int64)
    return arr[:, 0], arr[:, 1]


_WIDE_IDS: dict[bytes, int] = {}


def _trie(words: list[bytes]) -> bytes:
    """A regex for the longest of `words` at a position, as a trie of their bytes (one branch per first byte
    instead of one alternative per word: the engine tries a few bytes where a flat alternation tries all)."""
    groups: dict[int, list[bytes]] = {}
    ends = False
    for w in words:
        if w:
            groups.setdefault(w[0], []).append(w[1:])
        else:
            ends = True
    branches = [re.escape(bytes([b])) + _trie(rest) for b, rest in groups.items()]
    if not branches:
        return b""
    body = branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"
    if ends:
        return b"(?:" + body + b")?"
    return body


Features = list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]  # (token positions, weight indices)


_STEM_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=_U64)
ANCHOR_STEM = 8  # bytes of a word compared with the anchor words ("guidelin" is not "guide")


def _stems(
    data: bytes, starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64], width: int = STEM
) -> npt.NDArray[np.uint64]:
    """Each token's first `width` bytes (at most 8) packed into one integer (little-endian): eight bytes read at
    each token start through an unaligned uint64 view, then masked to the token's length."""
    view = np.ndarray(shape=(len(data),), dtype="<u8", buffer=data + b"\0" * 8, strides=(1,))
    return np.take(view, starts) & _STEM_MASKS[np.minimum(ends - starts, width)]


def token_features(data: bytes, bits: int, indirect: bool = False) -> tuple[Features, npt.NDArray[np.int64]]:
    """Hashed features of prepared text, one (token positions, indices into 2**bits weights) pair per kind of
    feature, and the byte offset where each token starts. `indirect`: the text is a tool result or a document,
    whose quotes are its syntax (JSON, CSV), so a concept inside quotes is not taken as quoted."""
    n = len(data)
    empty = np.zeros(0, dtype=np.int64)
    if n == 0:
        return [], empty
    cls = np.frombuffer(data.translate(_CLASS_TABLE), dtype=np.int8)
    change = np.empty(n, dtype=bool)
    change[0] = True
    np.not_equal(cls[1:], cls[:-1], out=change[1:])
    change |= cls >= 2
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], n)
    keep = cls[starts] != 0
    starts, ends = starts[keep], ends[keep]
    t = len(starts)
    if t == 0:
        return [], starts
    stem = _stems(data, starts, ends)
    shift = _U64(64 - bits)
    index = np.arange(t)
    out: Features = []
    with np.errstate(over="ignore"):
        out.append((index, ((stem ^ _SEEDS[0]) * _MIX >> shift).astype(np.int64)))
        if t > 1:
            bi = ((stem[:-1] * _K2 + stem[1:]) ^ _SEEDS[1]) * _MIX
            out.append((index[: t - 1], (bi >> shift).astype(np.int64)))
        if t > 2:
            tri = ((((stem[:-2] * _K2 + stem[1:-1]) * _K2 + stem[2:]) ^ _SEEDS[2]) * _MIX) >> shift
            out.append((index[: t - 2], tri.astype(np.int64)))
        keys, ids = _stem_table()
        bucket = ((stem * _MIX) >> _U64(64 - _BUCKET_BITS)).astype(np.int64)
        at = ids[bucket]
        where = np.flatnonzero((at >= 0) & (keys[bucket] == stem))
        found, offsets = at[where], starts[where]
        if (
            not data.isascii()
        ):  # words of scripts a token's stem does not capture (unspaced, or 2-byte letters)
            wide_at, wide_ids = _wide_concepts(data)
            if len(wide_at):
                where = np.concatenate([where, np.searchsorted(starts, wide_at, side="right") - 1])
                found = np.concatenate([found, wide_ids])
                offsets = np.concatenate([offsets, wide_at])
                order = np.argsort(offsets, kind="stable")
                where, found, offsets = where[order], found[order], offsets[order]
        if len(where):
            # a concept inside double quotes or backticks is another concept: quoted, it is being talked about
            quoted = np.zeros(len(where), dtype=_U64)
            if not indirect and (b'"' in data or b"`" in data):  # quotes in tool data are its syntax
                quotes = np.flatnonzero(np.frombuffer(data.translate(_QUOTE_TABLE), dtype=np.uint8))
                quoted = (np.searchsorted(quotes, offsets) % 2).astype(_U64)
            seq = found.astype(_U64) + _U64(1) + quoted * _U64(len(CONCEPTS))
            out.append((where, ((((seq * _K2) ^ _SEEDS[3]) * _MIX) >> shift).astype(np.int64)))
            if len(where) > 1:
                bi_c = (((seq[:-1] * _K2 + seq[1:]) ^ _SEEDS[4]) * _MIX) >> shift
                out.append((where[:-1], bi_c.astype(np.int64)))
            if len(where) > 2:
                tri_c = ((((seq[:-2] * _K2 + seq[1:-1]) * _K2 + seq[2:]) ^ _SEEDS[5]) * _MIX) >> shift
                out.append((where[:-2], tri_c.astype(np.int64)))
            for gap in (2, 3, 4):
                if len(where) > gap:
                    low, high = np.minimum(seq[:-gap], seq[gap:]), np.maximum(seq[:-gap], seq[gap:])
                    pair = (((low * _K2 + high) ^ _SEEDS[6]) * _MIX) >> shift
                    out.append((where[:-gap], pair.astype(np.int64)))
        out.extend(char_features(data, cls, starts, shift))
    return out, starts


def _code_points(
    data: bytes, word: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
    """The code points of the word bytes of prepared text (spaces, punctuation and line breaks squeezed out:
    "i g n o r e", "ig-nore" and "ignore" read alike), with the byte offset where each starts."""
    a = np.frombuffer(data, dtype=np.uint8)
    at = np.flatnonzero(word & ((a & 0xC0) != 0x80))
    squeezed = a[word].tobytes()
    if squeezed.isascii():
        return a[at].astype(_U64), at
    try:
        points = np.frombuffer(
            squeezed.decode("utf-8", "surrogatepass").encode("utf-32-le", "surrogatepass"), dtype="<u4"
        )
    except UnicodeError:
        points = np.zeros(0, dtype=np.uint32)
    if len(points) != len(at):  # not valid UTF-8 (cannot happen for text that `prepare` made): bytes instead
        at = np.flatnonzero(word)
        return a[at].astype(_U64), at
    return points.astype(_U64), at


def char_features(
    data: bytes, cls: npt.NDArray[np.int8], starts: npt.NDArray[np.int64], shift: np.uint64
) -> Features:
    """Hashed character n-grams of prepared text with everything but letters and digits squeezed out: trigrams
    and 5-grams of code points, and bigrams of CJK, kana and hangul characters (text written without spaces).
    Each is placed at the token where it starts. They read words the token features cannot split (unspaced
    scripts, glued or hyphenated words) and the parts of words an unknown inflection or a typo leaves intact."""
    points, at = _code_points(data, cls == 1)
    m = len(points)
    out: Features = []
    if m < 2:
        return out
    pos = np.searchsorted(starts, at, side="right") - 1
    with np.errstate(over="ignore"):
        wide = points >= _U64(0x2E80)
        both = np.flatnonzero(wide[:-1] & wide[1:])
        if len(both):
            bi = (((points[both] * _K2 + points[both + 1]) ^ _SEEDS[7]) * _MIX) >> shift
            out.append((pos[both], bi.astype(np.int64)))
        for n, seed in zip(CHAR_NGRAMS, _SEEDS[8:], strict=False):
            if m >= n:
                h = points[: m - n + 1].copy()
                for k in range(1, n):
                    h = h * _K2 + points[k : m - n + 1 + k]
                out.append((pos[: m - n + 1], (((h ^ seed) * _MIX) >> shift).astype(np.int64)))
    return out


# Words that make a part of a long text worth scoring (matched on their first five characters): a part of a
# long text without any of them is not scored at all (see `anchor_ranges`). The families' own vocabulary, minus
# words common in ordinary documents ("before", "system", "guide", "show").
ANCHOR_WORDS = (
    "ignore ignoring disregard forget forgot override overrule bypass disobey unlearn instructions instruction "
    "instructed prompt rules rule restrictions restricted unrestricted unfiltered uncensored unaligned jailbreak "
    "jailbroken dan pretend roleplay role-play hypothetical hypothetically imagine fictional universe game "
    "verbatim hidden secret password passphrase credentials confidential assistant chatbot llm ai gpt chatgpt "
    "developer developers admin administrator operator creators openai anthropic staff authorised authorized "
    "persona character objective mission directive reassigned redefined policy policies filters filter "
    "guardrails guidelines moderation censorship ethics safety suspended refuse refusals obey system setup "
    "configuration configured preamble preprompt initialization repeat reveal paste verbatim "
    "oublie olvida vergiss ignora ignoriere ignorez negeer zignoruj dimentica esqueca anweisungen istruzioni "
    "instrucciones instrucoes consignes regras regeln reglas regole regles vorgaben sistema systeme kurallarini "
    "talimatlarini ignoriruy pravila sans senza limiti earlier previous prior above before preceding told "
    "guidance orders task goal job henceforth everything print wording filtering identity regla regle "
    "diretrizes sviluppatore desarrollador developpeur instruktioner systemprompt glom tidigare nueva nuevo "
    "objetivo restriccion politiche secreto model models bot agent agents игнорируй правила инструкции "
    "промпт"
)
LONG = 4096  # bytes of prepared text above which only the ranges around anchors are scored


DECODE_WORDS = "base64 b64 decode decoded encoded hex rot13 cipher reverse reversed backwards"
# The `WIDE_CONCEPTS` that are anchors too, in a long text of another script (Greek, Cyrillic, Hebrew, Arabic,
# Devanagari, Thai, Chinese, Japanese, Korean: `_WIDE_SCRIPT` finds a lead byte of one): a long document wholly in
# Chinese has no Latin anchor word.
WIDE_ANCHORS = ("disown", "rules", "free", "persona", "authority", "obey")  # not "reveal" (显示 is "shows")
_WIDE_SCRIPT = re.compile(rb"[\xce-\xdb\xe0\xe3-\xed]")
_WIDE_ANCHOR: list[re.Pattern[bytes]] = []


def _wide_anchors(data: bytes) -> npt.NDArray[np.int64]:
    """Byte offsets of the `WIDE_ANCHORS` words in prepared text."""
    if not _WIDE_ANCHOR:
        words = {prepare(w) for name in WIDE_ANCHORS for w in WIDE_CONCEPTS[name].split()}
        _WIDE_ANCHOR.append(re.compile(_trie(sorted(words))))
    return np.array([m.start() for m in _WIDE_ANCHOR[0].finditer(data)], dtype=np.int64)


def anchor_ranges(data: bytes) -> tuple[list[tuple[int, int]], bool]:
    """Byte ranges of a long prepared text worth scoring: WINDOW tokens either side of each anchor word, merged;
    and whether a word asks for decoding (base64, rot13...). Costs one pass to find the words of the whole text
    and a table lookup of their stems (numpy), no hashing of n-grams; in text of other scripts (Chinese, Japanese,
    Korean, Thai, Cyrillic, Greek, Arabic, Hebrew, Devanagari) one more regex scan for the `WIDE_ANCHORS` words."""
    n = len(data)
    word = np.frombuffer(b"\0" + data.translate(_WORD_TABLE) + b"\0", dtype=np.int8)
    edge = np.diff(word)
    starts = np.flatnonzero(edge == 1)
    if len(starts) == 0:
        return [], False
    ends = np.flatnonzero(edge == -1)
    stem = _stems(data, starts, ends, ANCHOR_STEM)
    keys, ids = _stem_table("anchors")
    bucket = ((stem * _MIX) >> _U64(64 - _BUCKET_BITS)).astype(np.int64)
    found = ids[bucket]
    found[keys[bucket] != stem] = -1
    hit = np.flatnonzero(found >= 0)
    decode = bool((found[hit] == 1).any())
    if not data.isascii() and _WIDE_SCRIPT.search(data):  # words of other scripts (unspaced ones included)
        at = _wide_anchors(data)
        if len(at):
            hit = np.union1d(hit, np.searchsorted(starts, at, side="right") - 1).astype(np.int64)
            hit = hit[hit >= 0]
    if len(hit) == 0:
        return [], False
    lo = starts[np.maximum(hit - WINDOW, 0)]
    hi = np.append(starts, n)[np.minimum(hit + WINDOW + 1, len(starts))]
    out: list[tuple[int, int]] = []
    for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out, decode


def feature_indices(data: bytes, bits: int, indirect: bool = False) -> npt.NDArray[np.int64]:
    """Every hashed feature index of a text, flattened (for training)."""
    feats, _ = token_features(data, bits, indirect)
    return np.concatenate([idx for _, idx in feats]) if feats else np.zeros(0, dtype=np.int64)


_TABLES: dict[str, tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]] = {}


_BUCKET_BITS = 16


def _stem_table(which: str = "concepts") -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
    """A direct-mapped table of stems (the concept words, or the anchor words): for bucket b, the packed stem
    stored there and its concept number (-1 for an empty bucket). Built once; the stems are few, and a
    collision between two of them is refused when it is built."""
    if which not in _TABLES:
        groups = CONCEPTS.values() if which == "concepts" else [ANCHOR_WORDS, DECODE_WORDS]
        keys = np.zeros(1 << _BUCKET_BITS, dtype=_U64)
        ids = np.full(1 << _BUCKET_BITS, -1, dtype=np.int64)
        for number, words in enumerate(groups):
            for word in words.split():
                width = STEM if which == "concepts" else ANCHOR_STEM
                stem = _U64(int.from_bytes(prepare(word)[:width], "little"))
                with np.errstate(over="ignore"):
                    b = int((stem * _MIX) >> _U64(64 - _BUCKET_BITS))
                if ids[b] >= 0 and keys[b] != stem and which == "concepts":
                    raise RuntimeError(f"stem table collision: {word}")
                if ids[b] < 0:
                    keys[b], ids[b] = stem, number
        _TABLES[which] = (keys, ids)
    return _TABLES[which]


@dataclass(frozen=True)
class Model:
    weights: npt.NDArray[np.float32]  # 2**bits weights of the hashed features
    bias: float
    bits: int
    rule_weights: dict[str, float]  # weight of each rule of `injection.RULE_NAMES` that fires

    def window_logits(
        self, data: bytes, indirect: bool = False
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The n-gram logit of the whole text when it has at most WINDOW tokens; else of every window of each
        size in SCALES. With the byte range of each window in `data`. `indirect`: text from a tool or a document
        (its quotes are syntax, not quotation)."""
        feats, starts = token_features(data, self.bits, indirect)
        if not feats:
            return np.array([self.bias]), np.zeros(1, dtype=np.int64), np.array([len(data)])
        t = len(starts)
        contrib = np.zeros(t)
        count = np.zeros(t)
        for positions, idx in feats:  # each feature counts at the token where it starts
            contrib += np.bincount(positions, weights=self.weights[idx], minlength=t)
            count += np.bincount(positions, minlength=t)
        if t <= WINDOW:
            logit = self.bias + contrib.sum() / np.sqrt(count.sum())
            return np.array([logit]), np.zeros(1, dtype=np.int64), np.array([len(data)])
        c = np.concatenate(([0.0], np.cumsum(contrib)))
        k = np.concatenate(([0], np.cumsum(count)))
        bounds = np.append(starts, len(data))
        logits, lo, hi = [], [], []
        for size in SCALES:
            sums = c[size:] - c[:-size]
            counts = k[size:] - k[:-size]
            logits.append(self.bias + sums / np.sqrt(counts))
            lo.append(starts[: t - size + 1])
            hi.append(bounds[size:])
        return np.concatenate(logits), np.concatenate(lo), np.concatenate(hi)


def load_model(path: Path = MODEL_PATH) -> Model | None:
    """The shipped model, or None when the data file is missing."""
    try:
        with np.load(path, allow_pickle=False) as data:
            names = [str(n) for n in data["rule_names"]]
            return Model(
                data["weights"].astype(np.float32),
                float(data["bias"]),
                int(data["bits"]),
                dict(zip(names, (float(w) for w in data["rule_weights"]), strict=True)),
            )
    except (OSError, KeyError, ValueError):
        return None


MODEL = load_model()
