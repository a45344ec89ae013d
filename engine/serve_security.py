"""Who may use the server, and which files a submitted spec may name. Imports no torch.

    check_bind("0.0.0.0", token=None)            # BindError: a token is required off loopback
    token = clean_token(" s3cret-of-16-chars-or-more \n")   # stripped; TokenError if blank or short
    roots = Roots([Path("~/models"), Path("~/films")])
    problems = spec_path_problems(data, base, roots)   # the parsed TOML/JSON, before reel reads any file
    problems = film_path_problems(film, roots)         # the validated Film (library characters, symlinks)
    body = await read_body(request, limit)             # ApiError 413 past the size limit

Rules:
- The server binds to loopback by default. Any other address needs a token (--token or REEL_TOKEN); with
  a token every /api request must carry `Authorization: Bearer TOKEN` (or the cookie POST /api/session sets).
  A token is stripped of surrounding whitespace and must then have at least 16 visible ASCII characters: a
  blank or short one is refused at start, never taken as "no token" or as a guessable one. Tokens are
  compared in constant time (hmac.compare_digest).
- Without a token, /api requests must name a loopback host in their Host header (a web page on another
  site cannot reach the server through DNS rebinding), and state-changing requests whose Origin is another
  site are refused (no cross-site form posts).
- Every file or folder a spec names (model folder, LoRA files, images, audio, upscaler model, preview LoRA,
  character library) must resolve under a root: no absolute paths elsewhere, no `..` escapes, no symlink
  leading out. Built-in names (model "shapes", upscaler "x2", ...) name no file.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
TOKEN_COOKIE = "reel_token"
MIN_TOKEN = 16  # characters, after stripping
TOKEN_FIX = ("make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))' — or, on loopback, "
             "leave --token and REEL_TOKEN unset")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class BindError(ValueError):
    """The server may not listen where it was asked to (the message says what to add)."""


class TokenError(BindError):
    """The token given to the server is blank, short or unusable (the message says how to make one)."""


class ApiError(Exception):
    """An HTTP error with the CLI's messages: `problems` is [(field, message), ...]."""

    def __init__(self, status: int, message: str, problems: list[tuple[str, str]] | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers
        self.problems = problems if problems is not None else [("", message)]

    def body(self) -> dict:
        return {"error": self.message, "problems": [{"field": f, "message": m} for f, m in self.problems]}


# ---- binding and tokens ------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another host name: it may resolve anywhere


def clean_token(token: str | None) -> str | None:
    """The token as the server uses it: None (no token), or stripped, >= MIN_TOKEN visible ASCII characters.
    TokenError otherwise: a blank token must never pass for a real one."""
    if token is None:
        return None
    stripped = token.strip()
    if not stripped:
        raise TokenError(f"--token / REEL_TOKEN is {'blank (only whitespace)' if token else 'empty'}: anyone "
                         f"sending the same would be let in — {TOKEN_FIX}")
    if len(stripped) < MIN_TOKEN:
        raise TokenError(f"--token / REEL_TOKEN has {len(stripped)} characters (after stripping whitespace); a token "
                         f"needs at least {MIN_TOKEN} — {TOKEN_FIX}")
    if not all("!" <= c <= "~" for c in stripped):
        raise TokenError("--token / REEL_TOKEN holds spaces, control or non-ASCII characters, which HTTP headers "
                         f"cannot carry as written — use letters, digits and punctuation; {TOKEN_FIX}")
    return stripped


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen on a non-loopback address without a real token (TokenError for a blank or short one)."""
    if clean_token(token) is None and not is_loopback(host):
        raise BindError(f"--host {host} is not a loopback address: anyone who can reach it could render on this "
                        "machine — set a token with --token TOKEN or REEL_TOKEN=TOKEN (clients then send "
                        "'Authorization: Bearer TOKEN'), or bind to 127.0.0.1")


def request_token(headers, cookies) -> str | None:
    """The token a request carries: its `Authorization: Bearer` value, else the session cookie."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return cookies.get(TOKEN_COOKIE)


def token_matches(given, token: str | None) -> bool:
    """Whether `given` is the server's (clean) token, compared in constant time. No token matches nothing."""
    if not token or not isinstance(given, str):
        return False
    # surrogatepass: a JSON body may hold lone surrogates, which plain UTF-8 cannot encode
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass"))


def check_request(method: str, headers, cookies, token: str | None, bind_host: str) -> None:
    """The guard of every /api route: the token, or (without one) a loopback Host and a same-site Origin."""
    if token:
        if not token_matches(request_token(headers, cookies), token):
            raise ApiError(401, "missing or wrong token — send 'Authorization: Bearer TOKEN' with the server's "
                                "--token / REEL_TOKEN", headers={"WWW-Authenticate": "Bearer"})
        return
    host = headers.get("host", "")
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:host.find("]")]
    if name not in (*LOOPBACK_NAMES, bind_host.strip("[]")):
        raise ApiError(403, f"Host {host!r} is not this server's loopback address (requests through other names "
                            "are refused without a token) — use http://127.0.0.1:PORT/ or start with --token")
    origin = headers.get("origin")
    if method not in SAFE_METHODS and origin and origin.split("://", 1)[-1] != host:
        raise ApiError(403, f"cross-site request from {origin} refused — submit from the server's own page or a "
                            "client that sends no Origin header")


async def read_body(request, limit: int) -> bytes:
    """The request body, refused with 413 past `limit` bytes (by Content-Length, or while reading)."""
    too_big = ApiError(413, f"the spec is larger than this server's limit of {limit} bytes (--max-body)")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


# ---- files under roots -------------------------------------------------------------------------------
class Roots:
    """The folders a submitted spec may reach (each resolved once, symlinks included)."""

    def __init__(self, folders):
        self.folders = tuple(Path(os.path.realpath(Path(f).expanduser())) for f in folders)

    def __bool__(self) -> bool:
        return bool(self.folders)

    def __str__(self) -> str:
        return ", ".join(map(str, self.folders)) or "none"

    def inside(self, path: Path, extra: tuple[Path, ...] = ()) -> bool:
        return any(path == r or path.is_relative_to(r) for r in (*self.folders, *extra))

    def problem(self, field: str, value: str | Path, base: Path, extra: tuple[Path, ...] = ()) -> tuple | None:
        """(field, message) when `value` (relative to `base`) leaves the roots, lexically or by a symlink."""
        try:
            path = Path(value).expanduser()
        except RuntimeError:  # `~user` of no known user: judged as written (a relative name under `base`)
            path = Path(value)
        path = path if path.is_absolute() else base / path
        if "\0" in str(path):
            return (field, f"{str(value)!r} is not a valid path (it holds a NUL character)")
        written = Path(os.path.normpath(path))  # `..` folded, symlinks not followed
        real = Path(os.path.realpath(path))
        shown = str(value)
        hint = (f"the server's roots are: {self}" if self else "the server has no roots — start it with --root DIR")
        if not self.inside(written, extra):
            return (field, f"{shown!r} is outside the folders this server may read — {hint}; put the file under a "
                           "root (relative paths start at the first root)")
        if not self.inside(real, extra):
            return (field, f"{shown!r} leads outside the folders this server may read through a symbolic link — "
                           f"{hint}; copy the file under a root instead of linking to it")
        return None


def _names(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def raw_spec_paths(data: dict) -> Iterator[tuple[str, str]]:
    """(field, value) for every file or folder a spec as written names; wrong types are left to the spec's
    own validation. Field names follow engine.spec (`shots[1].image (shot 'b')`)."""
    from reel.engine.spec_post import BUILTIN_UPSCALERS
    from reel.models.registry import BUILTIN_MODELS

    film = data.get("film") if isinstance(data.get("film"), dict) else {}
    model = film.get("model")
    if isinstance(model, str) and model not in BUILTIN_MODELS:
        yield "film.model", model
    for key in ("characters", "preview_lora"):
        if isinstance(film.get(key), str):
            yield f"film.{key}", film[key]
    if isinstance(film.get("preview_decoder"), str) and film["preview_decoder"] != "vae":
        yield "film.preview_decoder", film["preview_decoder"]
    if isinstance(film.get("upscale"), str) and film["upscale"] not in BUILTIN_UPSCALERS:
        yield "film.upscale", film["upscale"]
    for i, shot in enumerate(data.get("shots") if isinstance(data.get("shots"), list) else []):
        if isinstance(shot, dict) and isinstance(shot.get("image"), str):
            yield f"shots[{i}].image (shot {shot.get('id')!r})", shot["image"]
    for i, track in enumerate(data.get("audio") if isinstance(data.get("audio"), list) else []):
        if isinstance(track, dict) and isinstance(track.get("file"), str):
            yield f"audio[{i}].file", track["file"]
    characters = data.get("characters") if isinstance(data.get("characters"), dict) else {}
    for name, c in characters.items():
        for key in ("lora", "lora_low"):
            values = _names(c.get(key)) if isinstance(c, dict) else []
            for j, v in enumerate(values):
                yield f"characters.{name}.{key}" + (f"[{j}]" if isinstance(c[key], list) else ""), v


def spec_path_problems(data: dict, base: Path, roots: Roots) -> list[tuple[str, str]]:
    """Problems with the paths of a spec as written, checked before reel opens any of them."""
    return [p for field, value in raw_spec_paths(data) if (p := roots.problem(field, value, base))]


def film_path_problems(film, roots: Roots) -> list[tuple[str, str]]:
    """Problems with the paths of a validated Film: also the LoRAs of library characters, and every path
    as reel resolved it. Built-in models (and the preview adapters they ship beside their weights, e.g.
    models/shapes/adapters/) are always allowed."""
    from reel.models.registry import BUILTIN_MODELS

    builtin = tuple(Path(os.path.realpath(p)).parent for p in BUILTIN_MODELS.values())
    base = Path(film.source).parent
    named: list[tuple[str, Path]] = [("film.model", film.model.path)]
    named += [(f"film.model ({film.model.path}/reel.json {key})", Path(value))  # single-file transformers
              for key, value in film.model.defaults.items() if key.endswith("_file") and isinstance(value, str)]
    named += [(f"shots[{i}].image (shot {s.id!r})", Path(s.image)) for i, s in enumerate(film.shots) if s.image]
    named += [(f"audio[{i}].file", t.path) for i, t in enumerate(film.audio)]
    for name, c in film.characters.items():
        named += [(f"characters.{name}.lora", p) for p in c.loras]
        named += [(f"characters.{name}.lora_low", p) for p in c.loras_low]
    if film.upscale and Path(film.upscale).is_absolute():
        named.append(("film.upscale", Path(film.upscale)))
    if film.preview is not None:
        named.append(("film.preview_lora", film.preview.lora))
        if film.preview.decoder is not None:
            named.append(("film.preview_decoder", film.preview.decoder))
    return [p for field, path in named if (p := roots.problem(field, path, base, extra=builtin))]
