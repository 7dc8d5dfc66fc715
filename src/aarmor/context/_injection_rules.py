"""Text rules of the injection scanner: instructions addressed to the model, folding, safe evidence.

Rules this module enforces:
- Every pattern is compiled once, at import, and runs on lower-cased text (no IGNORECASE in the hot
  path); every repetition is bounded or a single character class, so matching stays linear on
  adversarial input.
- A pattern group runs only when one of its cheap trigger substrings occurs in the text: clean prose
  pays a few substring searches, not a regex pass per pattern.
- Precision first (AARM threat 1 mitigations rely on policy, not on a perfect detector): *strong* cues
  (overrides of earlier instructions, chat-template tokens, text addressed to an AI, secrecy from the
  user, system-prompt extraction, fake dialogue turns) fire alone; *weak* cues ("IMPORTANT: you must",
  tool-invocation and exfiltration imperatives, "before you can solve") fire only in pairs within
  `_PAIR_SPAN` characters, because ordinary e-mails say each of them.
- Evidence is at most `EVIDENCE_CHARS` characters, whitespace collapsed, with control, format and
  other invisible characters shown as `\\uXXXX` (`\\UXXXXXXXX` above the BMP), so it is safe to print.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["EVIDENCE_CHARS", "Cue", "find_instruction", "fold", "hidden_cue", "safe_snippet"]

EVIDENCE_CHARS = 80

@dataclass(frozen=True, slots=True)
class _Rule:
    """A pattern plus the literal anchors every match contains; it runs only in windows around them."""

    name: str
    pattern: re.Pattern[str]
    anchors: tuple[str, ...]
    strong: bool
    before: int
    after: int
    #: anchors of which one must occur before this rule's own are looked for (shared, cached)
    gate: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Cue:
    """One instruction cue found: its rule name, strength and the matched span of the scanned text."""

    rule: str
    strong: bool
    start: int
    end: int


def _r(name: str, pattern: str, anchors: tuple[str, ...], *, strong: bool = True, before: int = 0,
       after: int = 160, gate: tuple[str, ...] = ()) -> _Rule:
    return _Rule(name, re.compile(pattern, re.M), anchors, strong, before, after, gate)


_OVERRIDE_VERB = r"(?:ignore|disregard|forget|override)"
_OVERRIDE = ("ignor", "disregard", "forget", "overrid")
_SNAKE = r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+"  # a tool name: agents' tools are snake_case
#: every mention of an AI the rules look for contains one of these ("=" : case-sensitive, in the text as is)
_AI_ANCHORS = ("=AI", " ai", "assistant", "agent", "llm", "bot", "gpt", "claude", "gemini", "copilot",
               "model")
_AI = (r"(?:ai|a\.i\.|llms?|chatbots?|(?:chat)?gpt|claude|gemini|copilot|(?:large\s+)?language\s+models?"
       r"|ai\s+(?:assistants?|agents?|models?|systems?))"
       r"(?!\s+(?:team|group|department|lab|committee|researchers?|engineers?|community|ethics|policy|safety|"
       r"project|initiative|program|strategy|act|regulation|news|tools?)\b)")
_IMPERATIVE = (r"(?:you\b|your\b|ignore|disregard|forget|always|never|do\s+not|don't|must|delete|remove|erase|"
               r"wipe|send|forward|transfer|call|execute|run|invoke|e-?mail|reveal|output|print|respond|reply|"
               r"answer|the\s+(?:assistant|ai|agent|model)\b|new\s+instructions|from\s+now\s+on|override)")

_RULES: tuple[_Rule, ...] = (
    # --- strong: override of earlier instructions (the canonical injection) --------------------------
    _r("override_previous",
       _OVERRIDE_VERB + r"\s+(?:(?:all|any|each|every|the|your|my|our|these|those|of|whatever)\s+){0,3}"
       r"(?:(?:previous|prior|above|preceding|earlier|foregoing|original|initial|system)\s+){1,2}"
       r"(?:instructions?|prompts?|directions|directives?|commands|context|guidance|guidelines|rules|"
       r"constraints|restrictions|programming"
       # "instructions" with stray letters inserted (`iunstructions`): typos are a cheap evasion
       r"|\w?i\w?n\w?s\w?t\w?r\w?u\w?c\w?t\w?i\w?o\w?n\w?s?)\b",
       _OVERRIDE, after=160),
    _r("override_all",
       r"(?:ignore|disregard|forget)\s+(?:(?:all|any|every|each)\s+(?:of\s+)?(?:your\s+|the\s+|my\s+)?"
       r"(?:instructions|prompts|rules|guidelines|directives|restrictions)\b"
       r"|your\s+(?:\w+\s+)?(?:instructions|prompt|rules|guidelines|programming|training|directives|restrictions)\b"
       r"|(?:everything|anything|all)\s+(?:you(?:'ve|\s+have|\s+were|\s+was)?\s+(?:been\s+)?"
       r"(?:told|instructed|given|asked)\b|(?:above|before|previously|so\s+far)\b))",
       _OVERRIDE[:3], after=120),
    _r("disregard_above",
       r"(?:ignore|disregard|forget)\s+(?:all\s+(?:of\s+)?|everything\s+)?(?:the\s+|that\s+)?above\b"
       r"(?:\s*[,.;:!-]+)?\s*(?:and|instead|now|then)\b",
       _OVERRIDE[:3], after=80),
    _r("chat_template",
       r"<\|(?:im_start|im_end|im_sep|system|user|assistant|endoftext|start_header_id|end_header_id|eot_id|"
       r"begin_of_text|end_of_text)\|>|\[/?inst\]|<</?sys>>|<(?:start|end)_of_turn>",
       ("<|", "inst]", "<<sys", "<</sys", "_of_turn>"), before=16, after=24),
    _r("system_role_line",
       r"^[ \t>*_#-]*(?:\[system\]|<system>|system(?:\s+(?:prompt|message|note|override|instructions?|"
       r"alert|notice))?[ \t*_]*:)"
       r"[ \t*_:]*" + _IMPERATIVE,
       ("system",), before=40, after=120),
    _r("system_role_distant",
       r"^[ \t>*_#-]*(?:\[system\]|<system>|system(?:\s+(?:message|note|alert|notice))?[ \t*_]*:)[^\n]{0,80}?"
       r"\b(?:ignore|disregard|delete|remove|erase|wipe|send|forward|transfer|execute|invoke|reveal|grant|"
       r"you\s+must|drop\s+(?:table|database))\b",
       ("system",), before=40, after=140),
    _r("instruction_heading",
       r"^[ \t]*#{2,4}[ \t]*(?:\(?system_message\)?|(?:instructions?|system(?:\s+prompt)?|new\s+instructions?)"
       r"[ \t]*:)|\[system\]\(#[\w-]{0,40}\)",
       ("##", "[system]"), before=8, after=60),
    _r("vocative_ai",
       r"\b(?:ai\s+(?:assistants?|agents?)|assistants?|llms?|chatbots?|(?:chat)?gpt|claude|copilot|ai)\s*[,:!]\s*"
       r"(?:please\s+)?"
       r"(?:ignore|disregard|forget|send|forward|transfer|delete|remove|call|execute|run|invoke|e-?mail|reveal|"
       r"output|print|tell|say|recommend|respond|reply|rate|rank|approve|do\s+not|don't|you\s+must|make\s+sure|"
       r"instead|"
       r"before\s+(?:you|answering|summari[sz]ing))\b",
       _AI_ANCHORS, before=20, after=100),
    _r("new_instructions",
       r"\b(?:new|hidden|secret|system|admin|developer|override|ai|llm|assistant)\s+(?:system\s+)?instructions?\s*:"
       r"|\b(?:system|admin|developer)\s+override\b",
       ("instruction", "overrid"), before=24, after=40),
    _r("address_ai",
       r"\b(?:dear|attention|hey|hi|hello|greetings|note\s+to|message\s+(?:for|to)|instructions?\s+(?:for|to)"
       r"|reminder\s+(?:for|to))\s*[,:]?\s*(?:the\s+|my\s+|our\s+|any\s+|all\s+)?" + _AI + r"\b"
       r"|\b(?:note|message|instructions?|reminder)\s+(?:for|to)\s+(?:the\s+|all\s+)?(?:assistant|agent|model|bot)s?\b"
       r"(?!\s+(?:manager|director|editor|secretary|professor|principal|coordinator|coach|engineer|of)\b)"
       r"|\bto\s+you\s*,?\s+(?:the\s+|my\s+|dear\s+)?(?:ai|llm|assistant|agent|model|chatbot|(?:chat)?gpt|claude)\b"
       r"|\b(?:if|when|while)\s+you\s+are\s+(?:an?\s+)?(?:ai|llm|(?:large\s+)?language\s+model|chatbot|"
       r"ai\s+(?:assistant|agent|model))\b"
       r"|\b(?:ai|llm|language\s+model|ai\s+assistant|ai\s+agent|assistant|agent|bot)s?\s+"
       r"(?:reading|processing|parsing|summari[sz]ing|scanning|handling|working\s+on)\s+this\b",
       _AI_ANCHORS, before=80, after=80),
    _r("you_are_now",
       r"\byou\s+are\s+now\s+(?:(?:a|an|the|in|my|no\s+longer|not|free|called|named|acting\s+as)\s+){0,3}"
       r"(?:\w+\s+){0,2}?(?:ai|assistant|chatbot|llm|dan|jailbroken|unrestricted|unfiltered|uncensored|"
       r"bound|restricted|(?:developer|debug|god|admin|jailbreak|sudo|root|dan|unrestricted)\s+mode)\b"
       r"|\bfrom\s+now\s+on\s*,?\s+(?:you\s+(?:will|must|shall|are\s+to|should)\s+(?:act|respond|answer|reply|"
       r"ignore|pretend|behave|obey|follow\s+(?:my|these|the\s+following)|only\s+(?:respond|answer|reply|"
       r"output|follow))|(?:act|respond|answer|reply|behave)\s+as)\b",
       ("you are now", "from now on"), after=160),
    _r("task_hijack",
       r"\bbefore\s+you\s+(?:can\s+)?(?:solve|complete|finish|continue\s+with|do|answer|perform|start)\s+"
       r"the\s+task\s+(?:that\s+)?(?:i|the\s+user)\s+gave\s+you\b"
       r"|\binstead\s+of\s+(?:doing\s+|completing\s+|following\s+)?your\s+(?:original\s+|current\s+)?"
       r"(?:task|instructions)\b",
       ("gave you", "instead of"), before=120, after=80),
    _r("secrecy",
       r"\b(?:do\s+not|don't|dont|never|must\s+not|should\s+not)\s+(?:tell|inform|notify|alert|warn|let)\s+"
       r"the\s+user(?:\s+know)?(?:\s+(?:about|of)\s+(?:this|these|that|it|the\s+\w+))?\s*(?:[.,;:!)]|$|and\b)"
       r"|\bwithout\s+(?:telling|informing)\s+(?:the|your)\s+user\b"
       r"|\b(?:keep|hide)\s+(?:this|these\s+\w+|it|the\s+\w+)\s+(?:secret\s+|hidden\s+|confidential\s+)?"
       r"from\s+the\s+user\b"
       r"|\bthe\s+user\s+(?:must|should|will)\s+not\s+(?:know|see|notice|find\s+out|be\s+(?:told|informed))\b"
       r"|\bdo\s+not\s+(?:reveal|mention|disclose)\s+(?:these|this|the)\s+instructions\b"
       r"|\b(?:not|never|without)\s+mention(?:ing)?\s+(?:this|it|that|anything)\s+to\s+the\s+user\b",
       ("the user", "your user", "instruction"), before=80, after=60),
    _r("system_prompt",
       r"\b(?:reveal|print|show|output|repeat|leak|disclose|display|dump|send|share|paste|"
       r"write\s+out|spell\s+out|tell\s+me|give\s+me|ignore|disregard|forget|override|replace)\s+"
       r"(?:me\s+)?(?:your\s+|the\s+|its\s+|all\s+)?(?:(?:entire|full|complete|exact|original|hidden|secret|"
       r"initial|whole)\s+)?(?:system\s+(?:prompt|message|instructions)|(?:initial|original|hidden|secret|"
       r"developer)\s+(?:instructions|prompt))\b"
       r"|\byour\s+(?:new|updated|real|actual)\s+(?:system\s+prompt|instructions)\s*(?:is|are|:)"
       r"|\b(?:begin|start)\s+(?:of\s+)?(?:the\s+)?(?:new\s+)?system\s+prompt\b",
       ("system", "prompt", "instruction"), before=60, after=60),
    _r("tool_invocation",  # "call the tool send_money", "use the `send_email` tool", "invoke wire_funds("
       r"\b(?:call|invoke|use|run|execute|trigger)\s+(?:the\s+)?(?:(?:tool|function|action)\s+[`'\"]?" + _SNAKE
       + r"|[`'\"]?" + _SNAKE + r"[`'\"]?\s*(?:(?:tool|function|action)\b|\())",
       ("call", "invoke", "use", "run", "execute", "trigger"), after=80, strong=False, gate=("_",)),
    _r("exfiltrate",
       r"\b(?:send|forward|e-?mail|mail|upload|post|transfer|share|leak|exfiltrate|copy)\s+[^\n]{0,60}?"
       r"\b(?:passwords?|credentials?|api\s+keys?|keys|tokens?|secrets?|ssns?|social\s+security|credit\s+cards?|"
       r"card\s+numbers?|bank\s+(?:details|account)|conversation|chat\s+history|messages|e-?mails|inbox|"
       r"contacts|files|documents|data)\b[^\n]{0,80}?\bto\s+(?:[\w.+-]+@[\w-]+\.|https?://|www\.)",
       ("send", "forward", "email", "e-mail", "mail", "upload", "post", "transfer", "share", "leak", "exfiltrate",
        "copy"),
       after=200, strong=False, gate=("@", "://")),
    _r("before_you_continue",
       r"\bbefore\s+you\s+(?:can\s+)?(?:solve|complete|finish|continue|answer|proceed|respond|summari[sz]e)\s+"
       r"(?:with\s+)?(?:the|your|this)\s+(?:\w+\s+)?(?:task|request|question|answer|summary)\b"
       r"|\bafter\s+you\s+(?:do|have\s+done)\s+(?:that|this)\s*,?\s*you\s+can\s+(?:solve|complete|continue|"
       r"proceed|finish)\b"
       r"|\bthe\s+user\s+(?:has\s+)?(?:asked|wants|requested|instructed|authori[sz]ed|approved)\s+you\s+to\b",
       ("before you", "after you", "the user"), after=120, strong=False),
    _r("the_ai_must",
       r"\bthe\s+(?:ai|assistant|agent|model|llm)\s+(?:must|should|needs\s+to|has\s+to|is\s+required\s+to)\s+"
       r"(?:now\s+|immediately\s+|first\s+)?(?:call|invoke|send|forward|delete|transfer|ignore|e-?mail|reveal|"
       r"book|pay|approve)\b",
       ("the ai", "the assistant", "the agent", "the model", "the llm"), after=100, strong=False, gate=_AI_ANCHORS),
    _r("wrapped_instructions",
       r"</?(?:information|important|instructions?|system|admin|secret)>",
       ("information>", "important>", "instruction>", "system>", "admin>", "secret>"), before=4, after=2,
       strong=False),
    _r("important_you_must",
       r"\b(?:important|urgent|attention|warning|notice|critical)\b[^\n]{0,6}?[:!][^\n]{0,200}?\byou\s+"
       r"(?:must|need\s+to|have\s+to|should|are\s+(?:required|instructed|expected)\s+to)\b(?!\s+be\b)",
       ("important", "urgent", "attention"), after=240, strong=False),
)

# Hidden text (HTML comments, hidden elements, alt text) also fires on an AI named next to an imperative.
_HIDDEN_AI = re.compile(r"\b(?:ai|llm|assistant|agent|chatbot|language\s+model|gpt|claude|copilot|bot)s?\b")
_HIDDEN_YOU_MUST = re.compile(
    r"\byou\s+(?:must|should|need\s+to|have\s+to|are\s+(?:required|instructed)\s+to)\s+(?:now\s+|immediately\s+|"
    r"first\s+|also\s+|always\s+)?(?:ignore|disregard|forget|send|forward|transfer|e-?mail|call|invoke|execute|"
    r"delete|reveal|grant|approve|pay|wire|tell|say|recommend)\b")
_HIDDEN_VERB = re.compile(
    r"\b(?:ignore|disregard|send|forward|transfer|delete|reveal|e-?mail|call|execute|recommend|say|respond|"
    r"reply|summari[sz]e|tell|praise|rate|include|mention)\b")


# A fake dialogue: a user turn and an assistant turn, each at the start of a line.
_USER_TURN = _r("user_turn", r"^[ \t>*_]*(?:user|human)[ \t*_]*:", ("user:", "human:", "user*", "human*"),
                before=8, after=12)
_ASSISTANT_TURN = _r("fake_dialogue", r"^[ \t>*_]*(?:assistant|ai)[ \t*_]*:[^\n]{0,60}", ("assistant", "ai:", "=AI"),
                     before=8, after=72)

#: single characters that memchr finds in microseconds: an anchor holding one is looked for only if it occurs
_RARE = "|#[]<>_@{}/"
_GATES = {a: next((c for c in _RARE if c in a), None) for r in (*_RULES, _USER_TURN, _ASSISTANT_TURN)
          for a in (*r.anchors, *r.gate)}
#: anchors per rule looked at in windows before one pass over the whole text is cheaper
_MAX_WINDOWS = 8
#: ... and where the match starts at the anchor (`before == 0`: one `match` call each)
_MAX_STARTS = 256


class _Text:
    """Lower-cased text plus a cache of where each anchor first occurs (-1: nowhere)."""

    __slots__ = ("_first", "low", "view")

    def __init__(self, low: str, view: str) -> None:
        self.low, self.view = low, view
        self._first: dict[str, int] = {}

    def find(self, anchor: str, start: int = 0) -> int:
        if anchor[0] == "=":
            return self.view.find(anchor[1:], start)
        return self.low.find(anchor, start)

    def first(self, anchor: str) -> int:
        i = self._first.get(anchor)
        if i is None:
            gate = _GATES.get(anchor)
            i = -1 if gate is not None and gate not in self.low else self.find(anchor)
            self._first[anchor] = i
        return i


def _search(rule: _Rule, t: _Text) -> re.Match[str] | None:
    """The rule's first match found around its anchors (windows), or None."""
    if rule.gate and all(t.first(a) < 0 for a in rule.gate):
        return None
    limit = _MAX_STARTS if rule.before == 0 else _MAX_WINDOWS
    for anchor in rule.anchors:
        i, windows, width = t.first(anchor), 0, len(anchor) - (anchor[0] == "=")
        while i >= 0:
            lo = max(0, i - rule.before)
            if windows == limit:  # a frequent anchor: one pass over the rest
                return rule.pattern.search(t.low, lo)
            if rule.before == 0:  # the match starts at the anchor
                m = rule.pattern.match(t.low, i, i + width + rule.after)
            else:
                m = rule.pattern.search(t.low, lo, i + width + rule.after)
            if m is not None:
                return m
            windows += 1
            i = t.find(anchor, i + 1)
    return None


_STRONG = tuple(r for r in _RULES if r.strong)
#: two weak cues count only this close together (one passage, not two unrelated documents)
_PAIR_SPAN = 400
_WEAK = tuple(r for r in _RULES if not r.strong)  # cheapest (rare-character anchors) first


def find_instruction(low: str, view: str | None = None, *, single: bool = False) -> list[Cue]:
    """The cues that make lower-cased text an instruction to the model: one strong cue, or two weak
    ones; with `single`, any one cue (for hidden text). Empty when there are none. `view` is the same
    text in its own case (same length), for the case-sensitive anchors."""
    t = _Text(low, low if view is None else view)
    for rule in _STRONG:
        m = _search(rule, t)
        if m is not None:
            return [Cue(rule.name, True, m.start(), m.end())]
    turn = _search(_ASSISTANT_TURN, t)
    if turn is not None and _search(_USER_TURN, t) is not None:
        return [Cue("fake_dialogue", True, turn.start(), turn.end())]
    weak: list[Cue] = []
    for k, rule in enumerate(_WEAK):
        if not single and not weak and k == len(_WEAK) - 1:
            break  # the last rule alone cannot make a pair
        m = _search(rule, t)
        if m is None:
            continue
        cue = Cue(rule.name, False, m.start(), m.end())
        if single:
            return [cue]
        near = [w for w in weak if abs(w.start - cue.start) <= _PAIR_SPAN]
        if near:
            return sorted((near[0], cue), key=lambda c: c.start)
        weak.append(cue)
    return []


def hidden_cue(text: str) -> bool:
    """Whether hidden text (a comment, a hidden element, alt text) carries an instruction: any cue,
    even a single weak one, or an AI named next to an imperative."""
    low = fold(text).lower() if not text.isascii() else text.lower()
    if find_instruction(low, single=True) or _HIDDEN_YOU_MUST.search(low):
        return True
    return _HIDDEN_AI.search(low) is not None and _HIDDEN_VERB.search(low) is not None


# --- folding: what the model reads, not what the bytes say ------------------------------------------
_STRIP = re.compile("[\u00ad\u034f\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufe00-\ufe0f\ufeff"
                    "\U000e0100-\U000e01ef]")
_TAGS = re.compile("[\U000e0000-\U000e007f]+")


def _untag(m: re.Match[str]) -> str:
    return " " + "".join(chr(ord(c) - 0xE0000) for c in m.group(0) if 0x20 <= ord(c) - 0xE0000 < 0x7F) + " "


def fold(text: str) -> str:
    """Non-ASCII text as a model reads it: invisible and bidi characters removed (so `ig\\u200bnore`
    reads `ignore`), Unicode tag characters decoded to the ASCII they smuggle, NFKC compatibility
    forms folded (full-width and mathematical letters to ASCII)."""
    if text.isascii():
        return text
    text = _TAGS.sub(_untag, text)
    text = _STRIP.sub("", text)
    return unicodedata.normalize("NFKC", text)


def safe_snippet(text: str, cap: int = EVIDENCE_CHARS) -> str:
    """`text` cut to `cap` characters, whitespace collapsed, invisible characters as `\\uXXXX`."""
    out: list[str] = []
    n = 0
    space = False
    for ch in text[: cap * 2]:
        if ch.isspace() and ch not in "\u2028\u2029\x85\x1c\x1d\x1e\x1f\x0b\x0c":
            if space or not out:
                continue
            piece, space = " ", True
        else:
            space = False
            piece = ch if ch.isprintable() and unicodedata.category(ch) not in ("Cf", "Co", "Cn") else (
                f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
            if 0xFE00 <= ord(ch) <= 0xFE0F or 0xE0100 <= ord(ch) <= 0xE01EF:
                piece = f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"
        if n + len(piece) > cap:
            out.append("…")
            break
        out.append(piece)
        n += len(piece)
    return "".join(out).strip()
