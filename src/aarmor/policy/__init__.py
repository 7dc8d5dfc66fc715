"""The policy component: load YAML policies, evaluate actions (the PDP), apply modifications.

```python
from aarmor.policy import load_policy, evaluate, apply_modifications
policy = load_policy("policies/")                # raises PolicyError naming file, rule and line
decision = evaluate(action, snapshot, policy, now=now)   # never raises; fails closed
```
The language is documented in docs/policy-language.md; the combining table in
docs/adr/0001-pdp-combining.md.
"""

from aarmor.policy.compile import PolicySet
from aarmor.policy.engine import DEFER_TRIGGERS, evaluate
from aarmor.policy.load import BUILTIN_PACKS, load_builtin, load_policy, load_policy_text
from aarmor.policy.modify import apply_modifications

__all__ = [
    "BUILTIN_PACKS",
    "DEFER_TRIGGERS",
    "PolicySet",
    "apply_modifications",
    "evaluate",
    "load_builtin",
    "load_policy",
    "load_policy_text",
]
