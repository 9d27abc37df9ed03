"""Chat messages for tests, in TRL's conversational form."""


def U(text: str) -> dict:
    """A user turn."""
    return {"role": "user", "content": text}


def A(text: str) -> dict:
    """An assistant turn."""
    return {"role": "assistant", "content": text}


def S(text: str) -> dict:
    """A system turn."""
    return {"role": "system", "content": text}
