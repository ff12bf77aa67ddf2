"""age encryption of backup parts (pyrage: Rust bindings of rage), streamed in bounded memory.

Backups are encrypted to the job's **recipients** (public keys); nothing on the backup side needs a
private key unless the job verifies its backups. Restores (and verification) read the **identity**
from a Prefect ``Secret`` block named by the user; its text is added to the run's redactor and never
logged, returned or put in an exception.

* :class:`AgeEncryptor` turns pyrage's pull API (``encrypt_io(reader, writer)``) into the push API of
  the backup pipeline: compressed chunks go into a bounded queue read by one encrypting thread, and
  its output is handed back to the pipeline's thread (which hashes and writes it to every storage).
* :func:`decrypt_to` decrypts one stored part into a file of the restore's own temporary directory;
  the file is used only when the whole part decrypted (age authenticates every 64 KiB chunk and the
  end of the stream), so a wrong identity or a damaged part fails before anything is restored.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pyrage
from pyrage import x25519

from planning.backup_encryption import check_secret_block_name, recipient_fingerprint
from stateferry.errors import InputError, PermanentError

#: compressed chunks waiting for the encrypting thread (each at most about one pipeline chunk)
_QUEUE_CHUNKS = 4
_IDENTITY_FIX = (
    "save the age identity (the text age-keygen wrote, AGE-SECRET-KEY-1...) in a Prefect Secret block"
    " and name it"
)


class DecryptionFailed(PermanentError):
    """A part could not be decrypted although its stored sha256 matched (damaged or foreign data)."""


class _Aborted(Exception):
    pass


class _QueueReader(io.RawIOBase):
    """What pyrage reads the plaintext from: chunks from a queue, ``None`` ends the stream."""

    def __init__(self, chunks: queue.Queue[bytes | None], aborted: threading.Event) -> None:
        self._chunks = chunks
        self._aborted = aborted
        self._buf = b""
        self._pos = 0
        self._eof = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        while self._pos >= len(self._buf):
            if self._eof:
                return b""
            try:
                item = self._chunks.get(timeout=0.5)
            except queue.Empty:
                if self._aborted.is_set():
                    raise _Aborted() from None
                continue
            if item is None:
                self._eof = True
                return b""
            self._buf, self._pos = item, 0
        end = len(self._buf) if size is None or size < 0 else self._pos + size
        out = self._buf[self._pos : end]
        self._pos += len(out)
        return out


class _DequeWriter(io.RawIOBase):
    def __init__(self, out: collections.deque[bytes]) -> None:
        self._out = out

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._out.append(chunk)
        return len(chunk)


def parse_recipients(recipients: list[str]) -> list[x25519.Recipient]:
    """pyrage recipients of the job's (already validated) ``age1...`` strings.

    Raises:
        InputError: ``encryption.recipients[i]`` is not a valid key (bad checksum).
    """
    out = []
    for i, text in enumerate(recipients):
        try:
            out.append(x25519.Recipient.from_str(text))
        except Exception:
            raise InputError(
                f"encryption.recipients[{i}]",
                f"{text[:12]!r}... is not a valid age recipient (checksum)",
                "copy the public key again from age-keygen's output",
            ) from None
    return out


class AgeEncryptor:
    """Push-style age encryption: :meth:`push` compressed bytes, get encrypted bytes back.

    Memory is bounded: at most :data:`_QUEUE_CHUNKS` chunks wait for the encrypting thread, and
    everything it wrote is handed back (and removed) on every :meth:`push`.

    Args:
        recipients: the job's ``age1...`` public keys.
    """

    def __init__(self, recipients: list[str]) -> None:
        self._recipients = parse_recipients(recipients)
        self._in: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUE_CHUNKS)
        self._out: collections.deque[bytes] = collections.deque()
        self._aborted = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="age-encrypt", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            pyrage.encrypt_io(
                _QueueReader(self._in, self._aborted),  # type: ignore[arg-type]
                _DequeWriter(self._out),  # type: ignore[arg-type]
                self._recipients,
            )
        except BaseException as exc:
            self._error = exc

    def _drain(self) -> list[bytes]:
        out = []
        while self._out:
            out.append(self._out.popleft())
        return out

    def _check(self) -> None:
        if self._error is not None and not isinstance(self._error, _Aborted):
            raise PermanentError(f"age encryption failed: {type(self._error).__name__}: {self._error}")

    def _put(self, item: bytes | None) -> None:
        while True:
            self._check()
            if not self._thread.is_alive():
                raise PermanentError("age encryption stopped unexpectedly")
            try:
                self._in.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def push(self, data: bytes) -> list[bytes]:
        """Encrypt more plaintext; returns the ciphertext produced so far (possibly nothing)."""
        self._put(data)
        return self._drain()

    def finish(self) -> list[bytes]:
        """End the stream (age's final chunk); returns the remaining ciphertext."""
        self._put(None)
        self._thread.join()
        self._check()
        return self._drain()

    def abort(self) -> None:
        """Stop the encrypting thread (the part is being discarded)."""
        self._aborted.set()
        self._thread.join(timeout=10)
        self._out.clear()


# --------------------------------------------------------------------------------------------------
# identities (restore and verification)


def load_identities(secret_block: str, field: str) -> tuple[list[Any], list[str]]:
    """The age identities held by a Prefect ``Secret`` block (an identity file's text).

    Args:
        secret_block: the block's name.
        field: the parameter that named it (for errors).

    Returns:
        (pyrage identities, the secret strings to redact).

    Raises:
        InputError: no such block, or its text holds no age identity (its content is never echoed).
    """
    from prefect.blocks.system import Secret

    try:
        block: Any = Secret.load(secret_block)
    except ValueError:
        raise InputError(field, f"no saved Secret block named {secret_block!r}", _IDENTITY_FIX) from None
    value = block.get()
    if not isinstance(value, str):
        raise InputError(field, f"Secret block {secret_block!r} does not hold text", _IDENTITY_FIX)
    identities: list[Any] = []
    secrets = [value]
    for line in value.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        secrets.append(line)
        try:
            identities.append(x25519.Identity.from_str(line))
        except Exception:
            problem = f"Secret block {secret_block!r} holds a line that is not an age identity"
            raise InputError(field, problem, _IDENTITY_FIX) from None
    if not identities:
        raise InputError(field, f"Secret block {secret_block!r} holds no age identity", _IDENTITY_FIX)
    return identities, secrets


def load_job_identities(
    r: Any,
    *,
    required: bool,
    secret: str | None = None,
    field: str = "encryption.identity_secret",
    fingerprints: list[str] | None = None,
    what: str = "the new backup (verify: true)",
) -> None:
    """Load the age identities for verifying / restoring encrypted backups into ``r.age_identities``.

    The Secret block is ``secret`` or the job's ``encryption.identity_secret``; its text joins the
    run's redactor. The identities must belong to one of ``fingerprints`` (default: the job's
    recipients), so a wrong key is refused before anything is read or written.

    Raises:
        InputError: ``field``: no identity named while ``required``, no such block, not an age
            identity, or none of the recipients.
    """
    enc = r.job.encryption
    name = check_secret_block_name(secret, field) if secret else (enc.identity_secret if enc else None)
    if name is None:
        if required:
            raise InputError(
                field,
                f"{what}: encrypted with age, and no identity is named to decrypt it",
                "save the age identity (AGE-SECRET-KEY-1...) in a Prefect Secret block and name it in"
                " the job's encryption.identity_secret"
                + (" or pass identity_secret=<block>" if field == "identity_secret" else ""),
            )
        return
    identities, texts = load_identities(name, field)
    r.secrets += texts
    if fingerprints is None:
        fingerprints = enc.fingerprints if enc else []
    check_identities_match(identities, fingerprints, field, what)
    r.age_identities = identities


def identity_fingerprints(identities: list[Any]) -> set[str]:
    """Fingerprints of the identities' public keys (compared with the manifest's ``age_recipients``)."""
    return {recipient_fingerprint(str(i.to_public())) for i in identities}


def check_identities_match(identities: list[Any], fingerprints: list[str], field: str, what: str) -> None:
    """Refuse identities that are none of the recipients ``what`` was encrypted to.

    Raises:
        InputError: naming ``field`` (nothing was read or written yet).
    """
    if not identity_fingerprints(identities) & set(fingerprints):
        raise InputError(
            field,
            f"the identity is not one of the {len(fingerprints)} recipient(s) {what} is encrypted to"
            f" ({', '.join(fingerprints[:4])})",
            "name the Secret block holding the identity of one of the job's encryption.recipients",
        )


def decrypt_to(src: BinaryIO, dst: Path, identities: list[Any], *, field: str, what: str) -> None:
    """Decrypt one part into ``dst`` (created 0600). ``dst`` is removed again when anything fails.

    Raises:
        InputError: ``field``: none of the identities can open the part.
        DecryptionFailed: the ciphertext is damaged or truncated (age authenticates each chunk).
    """
    try:
        with open(dst, "xb", opener=lambda p, f: os.open(p, f, 0o600)) as out:
            pyrage.decrypt_io(src, out, identities)  # type: ignore[arg-type]
    except pyrage.DecryptError as exc:
        dst.unlink(missing_ok=True)
        if "no matching keys" in str(exc).lower():
            raise InputError(
                field,
                f"the identity cannot open {what} (it is encrypted to other recipients)",
                "name the Secret block holding the identity of one of the job's encryption.recipients",
            ) from None
        raise DecryptionFailed(f"{what} cannot be decrypted ({exc}): the stored copy is damaged") from None
    except BaseException as exc:
        dst.unlink(missing_ok=True)
        if isinstance(exc, (OSError, ValueError)):
            raise DecryptionFailed(
                f"{what} cannot be decrypted ({type(exc).__name__}: {exc}): damaged or truncated"
            ) from None
        raise


def decrypt_into(src: Path, dst: Path, identities: list[Any], what: str) -> Path:
    """Decrypt the stored part ``src`` into ``dst`` (a restore's temp dir); a downloaded copy in that
    same directory is removed afterwards. Returns ``dst``. Raises as :func:`decrypt_to`
    (field ``identity_secret``)."""
    with open(src, "rb") as fh:
        decrypt_to(fh, dst, identities, field="identity_secret", what=what)
    if src.parent == dst.parent:
        src.unlink()
    return dst


@contextlib.contextmanager
def open_plain(fh: BinaryIO, identities: list[Any] | None, *, field: str, what: str) -> Iterator[BinaryIO]:
    """``fh`` itself when ``identities`` is None; else its decrypted copy (a private temp file that
    is deleted afterwards), opened for reading only after the whole part decrypted."""
    if identities is None:
        yield fh
        return
    tmp = Path(tempfile.mkdtemp(prefix="stateferry-age-"))
    try:
        path = tmp / "part"
        decrypt_to(fh, path, identities, field=field, what=what)
        with open(path, "rb") as plain:
            yield plain
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = [
    "AgeEncryptor",
    "DecryptionFailed",
    "check_identities_match",
    "decrypt_into",
    "decrypt_to",
    "identity_fingerprints",
    "load_identities",
    "load_job_identities",
    "open_plain",
    "parse_recipients",
]
