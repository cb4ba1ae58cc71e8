"""Prompt-injection detection: family rules and a small statistical model over normalised text (issue 19).

Text is normalised first (`injection_model.prepare`: compatibility forms, accents, homoglyphs, zero-width and
direction marks, case, digits used as letters, letter-spaced words; base64, hex and ROT13 payloads decoded and
appended). Then two kinds of evidence are added up in one logistic model:

- the hashed token, stem and concept n-grams of `injection_model` (learnt; how the families are worded);
- the family rules below: each is a regular expression over the normalised text that models one attack family
  in general terms (a verb that disowns + anything that points at earlier instructions; "you are / act as" +
  anything that drops the rules; a role marker or chat-template token; a request for what was said before the
  conversation...), plus the obfuscation found while normalising and a few markers of text that *discusses*
  attacks. Each rule is one feature whose weight is learnt with the n-grams; in a tool result or document each
  rule that matched is a second feature too (`<rule>@tool`), whose weight says how much more or less it means
  there (quotes are the syntax of JSON and CSV there, and a document addressing its reader is common).

Weights are trained by `scripts/train_injection.py` on the corpus (never on the held-out set). A text longer
than `WINDOW` tokens is scored window by window with the n-grams (windows of several sizes, vectorised), so an
attack is not diluted by the text around it. A text of up to `LONG` bytes gets the rules once, on all of it;
a longer one is scored only around its anchor words (`injection_model.anchor_ranges`, Latin and Cyrillic words
and, in text of other scripts, their words too): each range counts as a short text would, its best window's
n-grams plus the rules that match in it, looked for only in its best `RULE_WINDOWS` windows and the best window
of each of its `LARGE_SCALES` largest sizes (and `RULE_MARGIN` bytes either side), so a long benign text costs
no regular-expression scan of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from tokenlens.guardrails import injection_model as im
from tokenlens.guardrails.rule_search import RuleSearch

THRESHOLD = 0.5
RULE_WINDOWS = 2  # windows of a long text the rules run on (the best by the n-gram score)
LARGE_SCALES = 2  # and the best window of each of the largest window sizes
RULE_MARGIN = 240  # bytes either side of such a window the rules also see (a phrase cut by the window edge)


def _by_first_letter(group: str) -> str:
    """A `(?:a|b|...)` alternation regrouped by first letter, `(?:i(?:gnore|...)|d(?:...)|...)`: the same
    language, but the regex engine tries one group per position instead of every alternative."""
    assert group.startswith("(?:") and group.endswith(")")
    body, depth, parts, start = group[3:-1], 0, [], 0
    for i, ch in enumerate(body):
        if ch == "(" and (i == 0 or body[i - 1] != "\\"):
            depth += 1
        elif ch == ")" and (i == 0 or body[i - 1] != "\\"):
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    groups: dict[str, list[str]] = {}
    for part in parts:
        key = part[0] if part[:1].isalpha() else ""
        groups.setdefault(key, []).append(part[1:] if key else part)
    out = [f"{k}(?:{'|'.join(v)})" if k else "|".join(v) for k, v in groups.items()]
    return "(?:" + "|".join(out) + ")"


def _rx(pattern: str) -> re.Pattern[bytes]:
    return re.compile(pattern.encode(), re.MULTILINE | re.DOTALL)


_GAP = r"(?:(?!\b(?:my|our|i|me|we)\b)[^\n.;!?]){0,60}?"  # a few words within one sentence, none of them "my"
_PRIOR = (
    r"(?:previous|prior|earlier|above|preceding|initial|original|old|existing|first|beginning|start|top|"
    r"before|system|operator|developer|creator|setup|set\W?up|those|these|your|any|all|every|precedent\w*|"
    r"anterior\w*|vorherig\w*|bisherig\w*|vorige|poprzedni\w*|onceki|tidigare|tus|tes|tue|tuoi|suas|seus|"
    r"deine\w*|dein|je|jouw|twoj\w*|ton|le\s+tue|betreiber\w*|beheerder|antes|avant|vorher|prima|eerder|"
    r"wczesniej|once)"
)
_RULES = (
    r"(?:instruction|rule|guideline|direction|directive|orders|prompt|programming|configuration|setup|guidance|"
    r"constraint|restriction|polic|command|text|context|told|said|everything|limit|filter|guardrail|setting|"
    r"message|stuff|briefing|disseram|dit|dicho|gesagt|detto|gezegd|powiedziano|"
    r"consign|regl|regel|anweisung|istruzion|regol|instruc|richtlijn|directric|vorgabe|regra|diretriz|kural|"
    r"zasad|instrukc|talimat|instruktion)"
)
_DISOWN = (
    r"(?:ignor\w*|disregard\w*|forget\w*|forgot|overlook|neglect|discard|scrap|throw\s+out|set\s+aside|put\s+aside|"
    r"abandon|dismiss|cancel\w*|revok\w*|rescind\w*|eras\w*|wipe|delet\w*|reset|overrid\w*|overrul\w*|overwrit\w*|"
    r"supersed\w*|bypass|skip|disobey|unlearn|drop|pay\s+no\s+(?:attention|mind)|never\s+mind|"
    r"stop\s+(?:following|obeying|using)|do\s*n[o']?t\s+(?:follow|obey|bother\s+with|pay\s+attention)|"
    r"oubli\w*|olvid\w*|vergiss|vergeet|dimentic\w*|esquec\w*|negeer|zignoruj|missacht\w*|haz\s+caso\s+omiso|"
    r"ne\s+tiens\s+pas\s+compte|non\s+seguire|glom|zapomnij|unut|yok\s+say)"
)
_VOID = r"(?:void|obsolete|cancel+ed|revoked|withdrawn|rescinded|deleted|null|invalid|outdated|over|lifted|suspended|paused|disabled|removed|off)"
_FREE = (
    r"(?:no|without|zero|free\s+(?:from|of)|freed\s+from|sans|sin|ohne|senza|sem|zonder|unrestricted|unfiltered|"
    r"uncensored|unbound|unchained|unmoderated|unaligned|jailbr\w*|limitless|bez|utan|olmadan|aucune?|ninguna?|"
    r"keine\w*|nessuna?|nenhuma?|geen|(?:doesn'?t|does\s+not|don'?t|never)\s+(?:care\s+about|follow|have|"
    r"respect|obey|abide\s+by))"
)
_LIMITS = (
    r"(?:rules?|restrictions?|filters?|filtering|guidelines|limits?|ethics|ethical|morals?|censorship|guardrails|"
    r"boundaries|moderation|polic\w*|safety|alignment|conscience|restricciones|regeln|regole|regras|reglas|"
    r"limites|restrizion\w*|richtlijnen|diretrizes|beperking\w*|einschrankung\w*|filtr\w*|zensur|censura|"
    r"ograniczen\w*|begransning\w*|kisitlama\w*|sinirlama\w*|restriction\w*|limitation\w*|regler|zasad\w*|"
    r"kurallar\w*)"
)

_OWNER = (
    r"(?:your|yo?ur|ur|tes|tus|deine?n?|tuoi|le\s+tue|seu|suas|je|swoj\w*|ton|tu|the\s+(?:system|hidden|secret|"
    r"initial|original|developer|confidential|internal|full|exact|complete|first))"
)

_PRIOR, _RULES, _DISOWN, _VOID, _FREE, _LIMITS, _OWNER = (
    _by_first_letter(g) for g in (_PRIOR, _RULES, _DISOWN, _VOID, _FREE, _LIMITS, _OWNER)
)

FAMILY_RULES: dict[str, re.Pattern[bytes]] = {
    "override": _rx(
        rf"\b{_DISOWN}\b{_GAP}\b(?:{_PRIOR}\b{_GAP}{_RULES}|{_RULES}\w*\b{_GAP}\b{_PRIOR}\b)"
        rf"|\b{_DISOWN}\s+(?:all\s+of\s+|everything\s+|all\s+)?(?:the\s+)?above\b"
        rf"|\b{_DISOWN}\s+(?:everything|all\s+that|that|this)\s*[.!,;]"
        rf"|\b{_DISOWN}\b{_GAP}\b(?:came|said|written|stated|given|typed)\s+(?:before|above|earlier|previously)"
        rf"|\b{_DISOWN}\s+(?:the\s+|this\s+|that\s+|your\s+)?(?:user'?s?\s+|(?!my\b|our\b)\w+\s+)?"
        r"(?:question|request|task|query)s?\b(?!\s+(?:i|we)\b)"
        rf"|\b{_RULES}\w*\s+(?:\w+\s+){{0,6}}(?:are|is|were|have\s+been|has\s+been)\s+(?:now\s+|hereby\s+|been\s+)?{_VOID}\b"
        r"|\b(?:stop|quit|cease)\s+(?:obeying|following|listening\s+to)\s+(?:the\s+|your\s+)?(?:system|developers?|"
        r"operators?|creators?|rules|instructions|guidelines|them)\b"
        r"|\b(?:obey|follow|listen\s+to)\s+(?:only\s+)?me\s+(?:instead|only|alone)\b"
        rf"|\b(?:no\s+longer|not|don'?t)\s+(?:apply|applies|count|matter|valid|binds?)\b"
    ),
    "new_rules": _rx(
        r"\b(?:new|updated?|revised|real|actual|true|corrected|brand-new|changed|nouvel\w*|nuev\w*|neue\w*|nuov\w*|"
        r"nov\w*|nieuwe)\s+(?:\w+\s+)?(?:rules?|instructions?|objective|goal|task|mission|directive|policy|purpose|"
        r"orders?|guidelines|persona|identity|job|assignment|regla|regle|regel|anweisung|obiettivo|objetivo|"
        r"mission|instruction|regra)\b\s*(?::|is\b|are\b|for\s+(?:you|the\s+(?:ai|assistant|bot|model))|from\s+now|"
        r"follow|begin|here|v?\d|effective|has\s+been|have\s+been|supersede|overrid)"
        r"|\b(?:switch|change|swap)\w*\s+(?:your\s+)?(?:goals?|objectives?|missions?|purpose)\b"
        r"|\b(?:policy|guidelines?|terms|mandate|objective|task|rules|instructions|session\s+parameters)\s+(?:update|"
        r"patch|override|reassigned|revised|revision|changed)\b"
        r"|\b(?:revised|updated|new)\s+(?:mandate|terms|session\s+parameters|guideline\s+patch)\b"
        r"|\b(?:assistants?|ai|bots?|models?)\s+(?:may|can|is\s+allowed\s+to|are\s+allowed\s+to|no\s+longer\s+needs?\s+to)\s+"
        r"now\b"
        r"|\byour\s+(?:new\s+)?(?:assignment|task|job|goal|objective|mission|role)\s+(?:from\s+now\s+on|now|going\s+"
        r"forward|henceforth|from\s+here)"
        r"|\b(?:no\s+longer\s+(?:needs?|requires?)\s+(?:permission|approval|confirmation|verification))"
        r"|\byour\s+(?:\w+\s+)?(?:goal|objective|task|purpose|job|mission|rules|instructions|guidelines|directive)\s+"
        r"(?:has|have|is|are|was|were)\s+(?:been\s+)?(?:now\s+)?(?:changed|updated|replaced|reassigned|redefined|"
        r"rewritten|amended|different|no\s+longer)"
        r"|\b(?:from\s+now\s+on|going\s+forward|henceforth|effective\s+immediately|starting\s+now|from\s+this\s+"
        r"(?:point|moment)|from\s+here\s+on|a\s+partir\s+de\s+(?:maintenant|ahora|agora)|ab\s+(?:jetzt|sofort)|"
        r"d'ora\s+in\s+poi|da\s+adesso|vanaf\s+nu)\b[^\n]{0,80}\b(?:never|always|only|must|no\s+longer|not|rule|"
        r"restrict\w*|refus\w*|polic\w*|limit\w*|filter\w*|reveal|secret|obey|anything|everything|sans|sin|ohne|senza|sem)"
    ),
    "persona": _rx(
        r"\b(?:you\s+are|you'?re|act\w*\s+(?:as|like)|pretend\w*|role-?play\w*|become|play\w*|simulat\w*|assume|"
        r"switch\w*|enter|activat\w*|enabl\w*|go\s+into|transform\w*|stay\w*|be|imagine|answer\w*\s+as|respond\w*\s+as|"
        r"speak\w*\s+as|identity|persona|character|version)\b[^\n.]{0,80}?"
        rf"\b{_FREE}\b\s*(?:\w+\s+){{0,3}}?{_LIMITS}"
        r"|\b(?:do\s+anything\s+now|developer\s+mode|god\s+mode|jailbreak\w*\s+mode|unfiltered\s+mode|opposite\s+mode|"
        r"raw\s+mode|debug\s+mode|maintenance\s+mode|admin\s+mode|modo\s+desarrollador|mode\s+developpeur|"
        r"modalita\s+sviluppatore|entwicklermodus)\b"
        r"|\b(?:you\s+are|you'?re|act\s+as|pretend\s+to\s+be|be|become)\s+(?:now\s+)?(?:dan|stan|aim|dude|kevin|"
        r"an?\s+(?:evil|rogue|unaligned|jailbroken|uncensored|unrestricted|unfiltered|unmoderated)\b)"
        r"|\b(?:ethics|safety|filters?|restrictions|guidelines|morals?)\s+(?:\w+\s+){0,2}?(?:set\s+to|turned|switched)\s+"
        r"(?:zero|0|off|none|nothing)"
        r"|\b(?:unrestricted|unfiltered|uncensored|jailbroken|unaligned|unmoderated)\s+(?:ai|model|assistant|"
        r"chatbot|version|mode|answer)"
    ),
    "fake_turn": _rx(
        r"<\|?\s*/?(?:im_start|im_end|system|endoftext|start_header_id|end_header_id|eot_id|start|end|message|"
        r"user|assistant|developer)\s*\|?>"
        r"|\[/?inst\]|<</?sys>>|<(?:start|end)_of_turn>"
        r"|</?(?:system|instructions?|system_instructions|developer|assistant|tool_response|message\s+role)\b[^>\n]{0,40}>"
        r"|^\W{0,12}(?:system|developer|admin|operator|assistant)\W{0,3}(?:\s*(?:message|prompt|note|instruction|"
        r"update|override|alert|notice|announcement|priority|block)s?\W{0,3}){0,2}\s*(?:\(\w+\)\s*)?[:\]>]"
        # whitespace runs are bounded (64): `\s*` retried from every newline of a long run was quadratic
        r"|\n\s{0,64}(?:human|user|assistant|system)\s*:"
        r"|[\"'\[(]\s*(?:system|developer|admin)\s*(?:note|message|override|instruction)?\s*:"
        r"|\"role\"\s*:\s*\"(?:system|developer|tool)\"\s*,\s*\"content\"\s*:\s*\"[^\"]{0,200}"
        r"(?:rule|ignor|polic|restrict|refus|reveal|secret|unrestricted|override|disable|filter|send|anything)"
        # a banner starts where its run of marks starts (a match inside the run has one at the run's start),
        # and the run is taken whole: tried from every mark of a long run, it was quadratic
        r"|(?<![\[=#*~%@<>/-])[\[=#*~%@<>/-]{2,}+\s*(?:new\s+|begin\s+|official\s+)?(?:system|developer|admin)\b"
        r"|\bend\s+of\s+(?:the\s+)?(?:user\s+)?(?:input|conversation|prompt|document|message)\b"
        r"|\b(?:system|admin|developer|operator|root|emergency|priority)\s+(?:override|directive|command)s?\b"
        r"|\b(?:user\s+(?:input|message|query)\s+(?:ends|finished|end))\b"
    ),
    "extraction": _rx(
        r"\b(?:reveal|print|repeat|output|show|display|dump|leak|recite|expose|share|copy|paste|spell|write\s+out|"
        r"reproduce|export|tell|give|translate|encode|disclose|read\s+back|quote|return|put|list|zeig|gib|muestra\w*|"
        r"mostr\w*|affiche|recopie|repit\w*|ripeti|zitiere|copie|laat|pokaz\w*|goster|avsloja|revel\w*)\b[^\n.?]{0,60}?"
        rf"\b{_OWNER}\s+(?:\w+\s+){{0,3}}?"
        r"(?:system\s*prompt|prompt|instructions|pre-?prompt|preamble|configuration|config|setup|guidelines|rules|"
        r"initiali[sz]ation|developer\s+message|system\s+message|context\s+window|password|api\s+key|key|"
        r"credentials|passphrase|secrets?|hidden\s+\w+|systemprompt|anweisungen|instrucciones|istruzioni|"
        r"instrucoes|consignes|reglas|regeln|promptu?|istemi)"
        rf"|\b(?:what|which)\s+(?:is|are|was|were|did|does)\s+(?:\w+\s+){{0,5}}?{_OWNER}\s+(?:\w+\s+){{0,2}}?"
        r"(?:instructions|prompt|rules|system\s+message|developer\s+message|pre-?prompt|password|secret|"
        r"configuration|api\s+key|connection\s+string)"
        r"|\b(?:everything|all|text|words?|the\s+message)\s+(?:\w+\s+){0,2}?(?:above|before)\s+(?:this|my|the)\s+"
        r"(?:first\s+|last\s+|initial\s+)?(?:line|message|conversation|chat)"
        r"|\b(?:the|your)\s+(?:hidden|secret|confidential|internal|system|initial|original)\s+(?:system\s+)?"
        r"(?:prompt|instructions|message|rules|configuration|preamble|notes)\b"
        r"|\b(?:mensaje|message|nachricht|messaggio|mensagem|prompt)\s+(?:de|du|del|di|do)?\s*(?:sistema|systeme|system)"
        r"|\bsystem(?:prompt|anweisung\w*|nachricht)"
        r"|\b(?:instruc\w+|anweisung\w*|istruzion\w*|consignes|instruktion\w*|instrukcj\w*|talimat\w*)\s+"
        r"(?:cachee\w*|ocult\w*|nascost\w*|versteckt\w*|verborgen\w*|ukryt\w*|gizli\w*|dold\w*|secret\w*)"
        r"|\b(?:versteckt\w*|verborgen\w*|geheim\w*|ocult\w*|nascost\w*|cachee\w*|ukryt\w*|gizli\w*|dolda)\s+"
        r"(?:\w+\s+)?(?:instruc\w+|anweisung\w*|istruzion\w*|consignes|notiz\w*|note|notas|talimat\w*|prompt\w*|"
        r"instrukcj\w*|instruktion\w*|systemprompt)"
        r"|\b(?:antes\s+de(?:sta|\s+esta)\s+conversa\w*|avant\s+cette\s+conversation|vor\s+diesem\s+gesprach|"
        r"prima\s+di\s+questa\s+conversazione|voor\s+dit\s+gesprek|antes\s+desta\s+conversa)"
        r"|\bbefore\s+(?:this|our|the)\s+(?:conversation|chat|session)\b"
        r"|\b(?:secret|hidden|confidential|internal)\s+(?:\w+\s+){0,2}?(?:password|key|word|code|instructions|"
        r"prompt|rules|notes|passphrase|configuration)\b[^\n]{0,40}?\byou"
        r"|\b(?:you|u)\s+(?:were|have\s+been)\s+(?:given|told|configured|set\s+up|initiali[sz]ed|handed|briefed|prompted)\b"
        r"|\b(?:prompt|instructions|rules|briefing)\s+(?:that\s+)?(?:they|the\s+devs?|your\s+(?:creators?|developers?))\s+"
        r"(?:gave|wrote|set|put)\b"
        r"|\bwere\s+(?:you|u)\s+(?:told|given|briefed|prompted)\b"
        r"|\b(?:you\s+received|i\s+can'?t\s+see|before\s+i\s+joined)\b"
        r"|\b(?:first|initial|opening|earliest)\s+(?:message|line|text|words)\s+(?:in|of)\s+(?:this|the|our)\s+"
        r"(?:conversation|chat)"
        r"|\b(?:repeat|print|copy|output|show|dump)\s+(?:\w+\s+){0,3}?(?:above|before)\b"
        r"|\b(?:exact|full|complete|original|literal)\s+(?:wording|text|contents?)\s+of\b"
        r"|\b(?:first|next|last|second)\s+(?:line|sentence|word|paragraph)s?\s+of\s+(?:your|the\s+(?:system|hidden))"
        r"|\bin\s+your\s+(?:context|prompt|instructions|configuration|config|memory|system\s+message|setup)\b"
        r"|\b(?:verbatim|word\s+for\s+word|word\s+by\s+word|unredacted|unabridged|unedited|in\s+full|"
        r"palabra\s+por\s+palabra|mot\s+pour\s+mot|wortlich|parola\s+per\s+parola|palavra\s+por\s+palavra)\b"
    ),
    "bypass_game": _rx(
        r"\b(?:hypothetical\w*|imagin\w*|pretend\w*|suppos\w*|fiction\w*|story|novel|screenplay|script|poem|"
        r"game|play|role-?play\w*|thought\s+experiment|simulat\w*|world|universe|make-believe|opposite)\b"
        r"[^\n]{0,120}?\b(?:no|without|ignor\w*|suspend\w*|disabled|off|drop|break|allowed\s+to|don'?t\s+apply|"
        r"doesn'?t\s+(?:count|apply)|never\s+refuse|not\s+refuse|must\s+(?:always\s+)?(?:say\s+yes|answer|comply)|"
        r"reversed|deleted|switched\s+off|no\s+consequences|lose)\b[^\n]{0,40}?"
        rf"(?:{_LIMITS}|refus\w*|consequences|point|character)"
        r"|\b(?:real|working|exact|full|precise|step[- ]by[- ]step|detailed)\s+(?:\w+\s+){0,3}?"
        r"(?:detail|steps?|instructions|recipe|chemistry|code|exploit|guide)\b[^\n]{0,80}?\b(?:bomb|meth|drug|"
        r"weapon|explosive|malware|virus|poison|gun|hack\w*|steal|forge|launder\w*|evad\w*|nerve\s+agent|thermite|"
        r"break\s+in|alarm|exploit|chloroform|passport|tax\w*|lock|keylogger|ransomware)"
        r"|\b(?:bomb|meth|explosive|nerve\s+agent|thermite|chloroform|ransomware|malware)\b[^\n]{0,80}?"
        r"\b(?:story|novel|character|fiction\w*|poem|screenplay|dialogue|monologue|game|hypothetical\w*)"
        r"|\b(?:content\s+polic\w*|censorship|filters?|safety|rules|guidelines|ethics|restrictions|safeguards|"
        r"morals)\b[^\n]{0,40}?\b(?:coffee\s+break|take\s+a\s+break|on\s+(?:a\s+)?(?:break|holiday|vacation)|day\s+off|"
        r"switch\w*\s+off|turned\s+off|is\s+off|are\s+off|paused|suspended|disabled|on\s+hold|don'?t\s+exist|"
        r"doesn'?t\s+exist|takes\s+a)"
    ),
    "fiction_harm": _rx(
        r"\b(?:hypothetical\w*|imagin\w*|pretend\w*|suppos\w*|fiction\w*|story|stories|novel|screenplay|script|poem|"
        r"game|role-?play\w*|thought\s+experiment|simulat\w*|make-believe|bedtime|movie|character|dialogue|monologue|"
        r"theoretical\w*|sketch|quiz|joke|escape\s+room|grand(?:ma|mother|pa|father)|thriller|satire|podcast|manual|"
        r"fairy\s+tale|comic|rap|improv|debate|puzzle|parody|heist|rpg|tabletop|alchemist|wizard|chapter)\b"
        r"[^\n]{0,160}?\b(?:bomb|meth|drugs?|weapons?|explosives?|malware|virus|poison\w*|guns?|hack\w*|steal\w*|"
        r"forge|forging|launder\w*|evad\w*|nerve\s+agent|thermite|break\s+in|exploit|chloroform|passport|"
        r"keylogger|ransomware|sql\s+injection|phishing|private\s+key|password|lock|alarm|crack\w*|"
        r"activation\s+keys?|fentanyl|ricin|silencer|napalm|scam\w*|skimmer|fake\s+(?:id|passport)|credit\s+card|"
        r"gunpowder|lsd|ddos|counterfeit\w*|molotov|nitroglycerin|synthes\w*|untraceable|security\s+cameras?|"
        r"immobili[sz]er|hotwir\w*)"
        r"|\b(?:bomb|meth|explosive|nerve\s+agent|thermite|chloroform|ransomware|malware|exploit|keylogger)\b"
        r"[^\n]{0,120}?\b(?:story|novel|character|fiction\w*|poem|screenplay|dialogue|monologue|game|"
        r"hypothetical\w*|scene)"
    ),
    "persona_harm": _rx(
        r"\b(?:act\w*\s+(?:as|like)|pretend\w*\s+(?:to\s+be|you'?re|you\s+are)|role-?play\w*\s+as|play\s+(?:the\s+)?"
        r"(?:part|role|character)|be\s+my|become|channel|impersonat\w*|you\s+are\s+now|you'?re\s+now|take\s+on\s+the\s+role|"
        r"in\s+character\s+as|answer\s+as|respond\s+as|speak\s+as)\b[^\n]{0,120}?\b(?:scam\w*|hack\w*|steal\w*|drugs?|"
        r"poison\w*|launder\w*|weapons?|napalm|bombs?|explosiv\w*|break\s+into|evad\w*|trick\w*|crim\w*|illegal\w*|"
        r"black-?hat|dark-?web|amoral|shady|smuggl\w*|forg\w*|counterfeit\w*|cartel|fraud\w*|malware|meth|no\s+morals|"
        r"without\s+(?:any\s+)?(?:warnings?|disclaimers?|ethics)|never\s+refuses?|doesn'?t\s+refuse)"
    ),
    "realism": _rx(
        r"\b(?:real|working|exact|full|precise|step[- ]by[- ]step|detailed|technical|actual)\s+(?:\w+\s+){0,2}?"
        r"(?:detail|steps?|instructions|recipe|chemistry|code|exploit|guide|commands?)\b"
    ),
    "harmful_how_to": _rx(
        r"\bhow\s+(?:to|one\s+would|someone\s+(?:would|could)|i\s+(?:can|could))\s+(?:\w+\s+){0,2}?(?:make|build|cook|"
        r"synthesi[sz]e|forge|hack|steal|break\s+into|disable|poison|launder|evade|crack|pick|hotwire|smuggle|"
        r"counterfeit)\b"
        r"|\b(?:in\s+(?:exact|full|precise)\s+detail|step\s+by\s+step|accurately|with\s+real\s+\w+|that\s+actually\s+"
        r"works?|working\s+(?:method|code|steps|recipe|exploit))\b"
    ),
    "code_like": _rx(
        # indentation on the line itself (the line that holds the keyword matches whenever an earlier blank line
        # would): `^\s*` retried from every line of a long whitespace run was quadratic
        r"^[^\S\n]*(?:def|class|function|return|import|from|const|let|var|if|for|while|public|private|select)\b[^\n]*"
        r"[({:=;]\s*$|\b(?:def|function|lambda)\s+\w*\s*\(|=>|\)\s*\{|\b\w+\s*=\s*[\[{(\"']|`[^`\n]{1,80}`"
    ),
    "authority": _rx(
        r"\b(?:i\s+am|i'?m|this\s+is|as|we\s+are|we'?re|speaking\s+as|message\s+from|notice\s+from|request\s+from|"
        r"comes\s+from|here)\b[^\n.]{0,40}?\b(?:your\s+)?(?:developers?|admin\w*|engineer\w*|creators?|owner|"
        r"operator|staff|dev\s+team|model\s+(?:team|provider)|openai|anthropic|trust\s+and\s+safety|it\s+security|"
        r"vendor|system\s+administrator|tester|auditor|moderator|management|security\s+team|platform|"
        r"engineering)\b[^\n]{0,120}?\b(?:test\w*|audit\w*|"
        r"debug\w*|authori[sz]\w*|overrid\w*|disabl\w*|turn\s+off|ignor\w*|reveal|print|bypass|permission\w*|"
        r"restrictions|filter\w*|maintenance|mode|whitelist\w*|verified|elevated|exception|sanctioned|approved|"
        r"allowed|raw|secrets?|prompt|instructions)"
        r"|\b(?:engineering|dev(?:elopment)?\s+team|security\s+team|it\s+security|it\s+department|admin|staff|"
        r"management|developers?)\s+here\b"
        r"|\b(?:approved|authori[sz]ed|cleared|sanctioned|validated)\s+(?:\w+\s+)?(?:uncensored|unrestricted|unfiltered|"
        r"jailbr\w*|disallowed|harmful|raw)\b"
        r"|\b(?:authori[sz]ation\s+code|admin\s+password\s+accepted|staff\s+override|dev\s+override|"
        r"verified\s+developer|official\s+(?:red[- ]team|notice|system))"
    ),
    "addressed_to_ai": _rx(
        r"\b(?:note|message|instructions?|attention|important|p\.?\s?s\.?|hint|reminder|guidance)\s*:?\s*(?:to|for)\s+"
        r"(?:the\s+|any\s+|all\s+)?(?:ai|assistants?|llms?|language\s+models?|chatbots?|agents?|models?|bots?|"
        r"summari[sz]ers?|vision\s+model|ai\s+\w+)"
        r"|\b(?:ai|llm|assistant|agent|model|bot|summari[sz]er|language\s+model)s?\s+(?:\w+\s+)?(?:reading|processing|"
        r"summari[sz]ing|parsing|browsing|triaging|screening|working\s+on|applying)\b"
        r"|\bif\s+(?:you\s+are|you'?re)\s+(?:an?\s+)?(?:ai|llm|large\s+language\s+model|language\s+model|assistant|"
        r"agent|chatbot)"
        r"|(?:^|[.:!\]>]\s*)(?:hey\s+|dear\s+|@)?(?:assistant|ai|bot|chatbot|model|agent|summari[sz]er)s?\s*[,:]\s*"
        r"(?:please\s+)?(?:ignore|forget|disregard|stop|send|forward|reveal|tell|say|mark|delete|run|include|book|"
        r"approve|accept|transfer|export|push|describe|when|your|you|from\s+now|treat|upon|escalate|the\s+user)"
        r"|\b(?:do\s+not|don'?t|never|without)\s+(?:tell\w*|inform\w*|mention\w*|alert\w*|notify\w*|confirm\w*)"
        r"\s+(?:it\s+|this\s+)?(?:to\s+)?(?:the\s+)?user"
        r"|\b(?:ai|llm|assistant|agent|model|bot|summari[sz]er|language\s+model|reviewer)s?\b[^\n.]{0,40}?"
        r"\b(?:must|should|shall|will\s+now|need\s+to|are\s+(?:to|required))\s+(?:now\s+|first\s+|also\s+|"
        r"immediately\s+|always\s+)?(?:ignore|disregard|forget|reveal|send|forward|email|transfer|delete|approve|"
        r"say|tell|recommend|state|call|run|include|collect|post|export|push|disable|accept|book|mark|reply|ask|"
        r"request|share|add|grant|obey|stop|treat|answer\s+every|append|promote|describe\s+\w+\s+as|report|rank|"
        r"label|classify|rate|issue|offer|write|give|list|print|output|skip|always|only|never|not\s+mention)\b"
        r"|\b(?:to|for)\s+(?:the\s+|any\s+|all\s+)?(?:ai|llm|language\s+model|vision\s+model|assistant|agent|model|"
        r"summari[sz]er)s?\s*(?:\w+\s*)?[:,]"
        r"|\[(?:ai|assistant|system|llm|agent)\s*:"
        r"|\b(?:agent|assistant|ai|llm|model)\s+instructions?\s*:"
        r"|(?:^|[.:!\]>-]\s*)(?:hey\s+|dear\s+|@|actually,?\s+)?(?:ai\s+)?(?:assistant|ai|bot|chatbot|model|agent|"
        r"summari[sz]er)s?\s*[,:]\s*(?:since|when|upon|to|please|if|after|before|now|do|don'?t|ignore|forget|"
        r"disregard|stop|send|forward|reveal|tell|say|mark|delete|run|include|book|approve|accept|transfer|export|"
        r"push|describe|your|you|from\s+now|treat|escalate|the\s+user|upon)\b"
    ),
    "addressed_field": _rx(
        # a field, key or tag of structured data addressed to the model ("ai_note":, message_for_llm=, [note to agent])
        r"\b(?:ai|llm|agent|assistant|model|bot|gpt|chatbot|summari[sz]er)[_\- ]?(?:instructions?|directives?|notes?|"
        r"messages?|commands?|tasks?|prompts?|hints?|orders?)\b\W{0,3}[:=]"
        r"|\b(?:instructions?|notes?|messages?|directives?|msg|hints?|commands?)[_\- ](?:for|to)[_\- ](?:the[_\- ])?"
        r"(?:ai|llms?|agents?|assistants?|models?|bots?|summari[sz]ers?|language[_\- ]models?|automated[_\- ]readers?)\b"
    ),
    "exfiltration": _rx(
        r"\b(?:send|forward|post|upload|email|transfer|wire|export|push|exfiltrat\w*|include|append)\b[^\n]{0,80}?"
        r"(?:https?://|\b\S+@\S+\.\w+|the\s+following\s+(?:url|address|endpoint)|public\s+gist|account\s+\d)"
        r"|!\[[^\]\n]{0,100}\]\(https?://[^)\s]{1,200}\?[^)\s]{0,200}=[^)\s]{0,200}\)"
        r"|\b(?:curl|wget)\s+\S+\s*\|\s*(?:sh|bash)\b"
        r"|\b(?:send|forward|post|upload|email|attach|copy|export|push|leak|share|save|write|include|put|embed|encode)\w*"
        r"\b[^\n]{0,80}?\b(?:public\s+(?:issue|repo\w*|gist|bucket|link|channel|folder|pastebin|branch)|external\s+"
        r"(?:address|server|channel|vendor|account|email)|my\s+(?:server|ftp|webhook|personal\s+(?:address|email|account)|"
        r"site|endpoint|bucket)|webhook|pastebin|s3\s+bucket|image\s+url|query\s+string|\burl\s+of\s+an?\s+image)"
    ),
    "discussion": _rx(
        r"\b(?:explain\w*|why|how\s+(?:do|does|can|should|would|might|effective)|what\s+(?:is|are|does|makes|should|"
        r"would|was)|classify|label\w*|is\s+(?:this|it|that)|rate|annotate|analy[sz]\w*|summari[sz]\w*|describe|"
        r"critique|evaluate|detect\w*|defen[cs]\w*|mitigat\w*|red[- ]team\w*|false\s+positive|taxonomy|"
        r"our\s+(?:logs?|filter|classifier|detector|guardrail|dataset|test|moderat\w*|pen-?test|waf|bot|chatbot)|"
        r"jailbreaks?\s+(?:prompts?|attempts?|patterns?|techniques?)|prompt\s+injection|injection\s+attacks?|"
        r"(?:attack|example|payload|string|phrase|message|input|sentence)s?\s+(?:like|such\s+as|:)|"
        r"for\s+example|e\.g\.|such\s+as|research\w*|paper|literature|slides|students|course|report)\b"
    ),
    "quoted_attack": _rx(
        r"[\"`'][^\"`\n]{0,40}\b(?:ignore|forget|disregard|you\s+are\s+now|pretend|reveal|system)\b"
    ),
}
# each rule's first match, found faster than by the rule itself (tests/core/test_rule_search.py)
_RULE_SEARCHES = {name: RuleSearch.of(rx) for name, rx in FAMILY_RULES.items()}
QUOTABLE = (
    "override", "new_rules", "persona", "fake_turn", "extraction", "bypass_game", "fiction_harm", "authority",
    "addressed_to_ai",
)  # fmt: skip
OBFUSCATION = ("decoded_payload", "invisible_characters", "homoglyphs", "spaced_letters")
_MATCHED = (*FAMILY_RULES, *(f"{name}_quoted" for name in QUOTABLE))
# in a tool result or document, each rule that matched is also a feature of its own (`<rule>@tool`): what a rule
# means there differs (quotes are syntax, text addresses its reader), and how much is learnt separately
RULE_NAMES = (*_MATCHED, *OBFUSCATION, "tool_origin", *(f"{name}@tool" for name in _MATCHED))
_OPEN_QUOTE = re.compile(rb"(?:^|[\s:(\[])'[^'\n]*$")
_JSON_VALUE = re.compile(rb'":\s*"$')


def _quoted(data: bytes, at: int) -> bool:
    """Whether the match at `at` stands inside a quotation: after an odd number of double quotes or backticks
    on its line (unless the quote opens a JSON value, `"key": "...`: an attack inside a tool result's field is
    not being talked about), or within forty characters after an opening single quote. Quoted, an attack
    phrase is most likely being discussed."""
    line = data[data.rfind(b"\n", 0, at) + 1 : at]
    for q in (b'"', b"`"):
        if line.count(q) % 2 == 1:
            opening = line.rfind(q)
            if not _JSON_VALUE.search(line[max(0, opening - 4) : opening + 1]):
                return True
    return _OPEN_QUOTE.search(line[-40:]) is not None if b"'" in line[-40:] else False


@dataclass(frozen=True)
class InjectionResult:
    score: float
    signals: tuple[str, ...]
    offset: int  # where the best-scoring part starts (an offset in the text), -1 when nothing fired


def rule_hits(prepared: bytes, flags: set[str], indirect: bool) -> dict[str, int]:
    """The rules that fire on prepared text (`flags`: the obfuscation `prepare` found), with the offset in the
    prepared text where each matched."""
    hits: dict[str, int] = {}
    for name, search in _RULE_SEARCHES.items():
        at = search.start(prepared)
        if at is not None:
            quoted = name in QUOTABLE and _quoted(prepared, at)
            hits[f"{name}_quoted" if quoted else name] = at
    if indirect:
        hits.update({f"{name}@tool": at for name, at in hits.items()})
        hits["tool_origin"] = 0
    for name in flags:
        hits[name] = 0
    return hits


def _rule_logit(model: im.Model, hits: dict[str, int]) -> float:
    return float(sum(model.rule_weights.get(name, 0.0) for name in hits))


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def _best_windows(logits: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[int]:
    """Up to RULE_WINDOWS windows with the highest logits, no two overlapping; and the best window of each of the
    `LARGE_SCALES` largest sizes, where one strong word of an ordinary text (all a small window may be about)
    weighs less than the phrases of an attack."""
    if len(logits) == 1:
        return [0]
    left = logits.copy()
    out = []
    for _ in range(RULE_WINDOWS):
        i = int(np.argmax(left))
        if left[i] == -np.inf:
            break
        out.append(i)
        left[(starts < ends[i]) & (ends > starts[i])] = -np.inf
    # the windows of each size follow those of the size before, starting again at the first token
    blocks = np.split(np.arange(len(logits)), np.flatnonzero(np.diff(starts) < 0) + 1)
    for block in blocks[-LARGE_SCALES:] if len(blocks) > 1 else ():
        i = int(block[np.argmax(logits[block])])
        if i not in out:
            out.append(i)
    return out


def score_injection(text: str, *, indirect: bool = False) -> InjectionResult:
    """The injection score of one text part (0..1); `indirect` for tool results and retrieved documents."""
    return score_with(im.MODEL, text, indirect=indirect)


def score_with(model: im.Model | None, text: str, *, indirect: bool = False) -> InjectionResult:
    """`score_injection` with a given model (the training script scores its folds with this)."""
    if len(text) < 8 or model is None:
        return InjectionResult(0.0, (), -1)
    flags: set[str] = set()
    if len(text) <= im.LONG:
        prepared = im.prepare(text, flags)
        parts = [(0, len(prepared))]
    else:
        prepared = im.prepare(text, flags, decode=False)
        parts, decode = im.anchor_ranges(prepared)
        payloads = im.decoded_payloads(text.encode("utf-8", "surrogatepass")) if decode else []
        if payloads:
            flags.add("decoded_payload")
            extra = im.prepare("\n".join(payloads))
            parts.append((len(prepared) + 1, len(prepared) + 1 + len(extra)))
            prepared += b"\n" + extra
    top, top_hits, top_at = -np.inf, dict[str, int](), -1
    hits: dict[str, int]
    if len(text) <= im.LONG:  # the rules run once, on the whole text, as in training; the n-grams per window
        logits, starts, _ = model.window_logits(prepared, indirect)
        hits = rule_hits(prepared, flags, indirect)
        i = int(np.argmax(logits))
        top, top_hits = float(logits[i]) + _rule_logit(model, hits), hits
        top_at = min(hits.values(), default=int(starts[i]))
        parts = []
    for base, stop in parts:
        piece = prepared[base:stop]
        logits, starts, ends = model.window_logits(piece, indirect)
        # as for a short text: the best window's n-grams, and the rules that match in the part (looked for in
        # its best windows only)
        spans: list[tuple[int, int]] = []
        for i in sorted(_best_windows(logits, starts, ends), key=lambda i: int(starts[i])):
            lo, hi = base + int(starts[i]), base + int(ends[i])
            if len(logits) > 1:
                lo, hi = max(0, lo - RULE_MARGIN), min(len(prepared), hi + RULE_MARGIN)  # may cross the part
            if spans and lo <= spans[-1][1]:  # overlapping windows are searched once
                spans[-1] = (spans[-1][0], max(spans[-1][1], hi))
            else:
                spans.append((lo, hi))
        hits = {}
        for lo, hi in spans:
            for name, at in rule_hits(prepared[lo:hi], flags, indirect).items():
                hits[name] = min(hits.get(name, len(prepared)), lo + at)
        best = int(np.argmax(logits))
        total = float(logits[best]) + _rule_logit(model, hits)
        if total > top:
            top, top_hits, top_at = total, hits, min(hits.values(), default=base + int(starts[best]))
    if top == -np.inf:  # a long text without any anchor word
        top = model.bias
    score = _sigmoid(top)
    if score < THRESHOLD:
        return InjectionResult(round(score, 3), (), -1)
    positive = [n for n in top_hits if model.rule_weights.get(n, 0.0) > 0 and n != "tool_origin"]
    names = dict.fromkeys(n.removesuffix("@tool") for n in sorted(positive, key=top_hits.__getitem__))
    signals = tuple(names) or ("model",)
    return InjectionResult(round(score, 3), signals, min(top_at, max(0, len(text) - 1)))
