#!/usr/bin/env python3
"""Independent verifier of Credit Gateway evidence bundles (interchange-v1 §8) and of
evaluation answer bundles (信用评价结果互认, docs/adr/0004-evaluation-recognition.md).

Written from the spec alone, with standard tools: Python's hashlib and json, and the
`cryptography` package for Ed25519. It shares no code with the gateway, so a bundle that
passes here and in `credit-gateway evidence verify` is checked by two implementations.

    python3 tools/verify_evidence.py BUNDLE.json ANCHOR.json

ANCHOR.json is the list of trusted federation root keys. Exit 0: every signature and link
holds. Exit 1: the first failure is printed. Exit 2: the bundle uses something this verifier
cannot check (SM2 signatures: `cryptography` has no SM2).
"""

import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ENVELOPE_TYP = "credit-gateway/envelope+v1"
RECEIPT_TYP = "credit-gateway/receipt+v1"
REGISTRY_TYP = "credit-gateway/registry+v1"
EVIDENCE_TYP = "credit-gateway/evidence+v1"
ANSWER_TYP = "credit-gateway/evaluation-answer+v1"
AGREEMENT_TYP = "credit-gateway/agreement+v1"
ANSWER_EVIDENCE_TYP = "credit-gateway/evaluation-evidence+v1"


class Failure(Exception):
    pass


class Unsupported(Exception):
    pass


def b64u_decode(s):
    if "=" in s:
        raise Failure("base64url must not be padded")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def reject_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise Failure("duplicate member name in a JSON object")
    return dict(pairs)


def loads(data):
    return json.loads(data, object_pairs_hook=reject_duplicates)


# RFC 8785 (JCS), enough for the documents the gateway signs: objects sorted by UTF-16 code
# units, minimal string escapes, integers as digits, other numbers in ECMAScript form.
def jcs(value):
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise Failure("NaN and infinities are not JSON")
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        text = repr(value)
        if "e" in text:
            mantissa, exponent = text.split("e")
            sign = "-" if exponent.startswith("-") else "+"
            text = f"{mantissa}e{sign}{exponent.lstrip('+-').lstrip('0') or '0'}"
        return text
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: kv[0].encode("utf-16-be"))
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + jcs(v) for k, v in items) + "}"
    raise Failure(f"unexpected JSON value {value!r}")


def sha256(data):
    return hashlib.sha256(data).digest()


def decode_jws(jws, typ):
    """Returns (header, body, signing input) after checking the profile of §4."""
    if set(jws) != {"protected", "payload", "signature"}:
        raise Failure("a JWS must have exactly protected, payload and signature")
    header = loads(b64u_decode(jws["protected"]))
    if set(header) != {"alg", "kid", "typ"}:
        raise Failure("the protected header must be exactly alg, kid, typ")
    if header["typ"] != typ:
        raise Failure(f"expected typ {typ}, found {header['typ']}")
    body = loads(b64u_decode(jws["payload"]))
    if jcs(body).encode() != b64u_decode(jws["payload"]):
        raise Failure("payload is not in canonical (RFC 8785) form")
    signing_input = (jws["protected"] + "." + jws["payload"]).encode("ascii")
    return header, body, signing_input


def check_signature(alg, public_key_b64, jws, signing_input, what):
    if alg != "EdDSA":
        raise Unsupported(f"{what} uses {alg}; this verifier checks only EdDSA")
    key = Ed25519PublicKey.from_public_bytes(b64u_decode(public_key_b64))
    try:
        key.verify(b64u_decode(jws["signature"]), signing_input)
    except InvalidSignature:
        raise Failure(f"{what}: signature does not verify") from None


def merkle_leaf(item_hash):
    return sha256(b"\x00" + item_hash)


def merkle_node(left, right):
    return sha256(b"\x01" + left + right)


def verify_inclusion(leaf, index, size, path, root):
    """RFC 9162 §2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = merkle_node(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = merkle_node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def in_window(key, at):
    # Spec timestamps are fixed-width enough to compare as text once normalised to ms.
    def norm(t):
        head, _, frac = t[:-1].partition(".")
        return head + "." + (frac + "000")[:3]

    return norm(key["valid_from"]) <= norm(at) <= norm(key["valid_to"])


def verify(bundle, anchor):
    if bundle.get("typ") != EVIDENCE_TYP:
        raise Failure("not an evidence bundle")
    item = bundle["item"]
    item_hash = sha256(jcs(item).encode())

    # The registry, signed by a trusted root.
    header, registry, signing_input = decode_jws(bundle["registry"], REGISTRY_TYP)
    root = next((r for r in anchor if r["kid"] == header["kid"]), None)
    if root is None:
        raise Failure(f"/registry: signed by {header['kid']}, not a trusted root")
    check_signature(root["alg"], root["public_key"], bundle["registry"], signing_input, "/registry")
    registered = {k["kid"]: (m["member_id"], k) for m in registry["members"] for k in m["keys"]}

    # Every key in the bundle as the registry lists it.
    keys = {}
    for i, k in enumerate(bundle["keys"]):
        owner, listed = registered.get(k["kid"], (None, None))
        same = listed is not None and all(listed[f] == k[f] for f in ("alg", "public_key", "valid_from", "valid_to"))
        if not same:
            raise Failure(f"/keys/{i}: {k['kid']} is not the registry's key")
        keys[k["kid"]] = (owner, k)

    def signer(jws_header, member, at, what):
        owner, key = keys.get(jws_header["kid"], (None, None))
        if key is None:
            raise Failure(f"{what}: key {jws_header['kid']} is not in the bundle")
        if owner != member:
            raise Failure(f"{what}: key {jws_header['kid']} belongs to {owner}, not {member}")
        if not in_window(key, at):
            raise Failure(f"{what}: key {jws_header['kid']} is not valid at {at}")
        return key

    previous_receiver = None
    for i, hop in enumerate(bundle["hops"]):
        where = f"/hops/{i}"
        header, env, signing_input = decode_jws(hop["envelope"], ENVELOPE_TYP)
        key = signer(header, env["sender"], env["created_at"], where + "/envelope")
        check_signature(key["alg"], key["public_key"], hop["envelope"], signing_input, where + "/envelope")
        envelope_digest = sha256(signing_input).hex()

        proof = hop["proof"]
        path = [bytes.fromhex(h) for h in proof["path"]]
        if proof["size"] != env["count"] or not verify_inclusion(
            merkle_leaf(item_hash), proof["index"], proof["size"], path, bytes.fromhex(env["merkle_root"])
        ):
            raise Failure(f"{where}/proof: the item is not under the envelope's Merkle root")

        expected_sender = item["origin"] if previous_receiver is None else previous_receiver
        if env["sender"] != expected_sender:
            raise Failure(f"{where}: sent by {env['sender']}, expected {expected_sender}")

        header, receipt, signing_input = decode_jws(hop["receipt"], RECEIPT_TYP)
        key = signer(header, env["receiver"], receipt["received_at"], where + "/receipt")
        check_signature(key["alg"], key["public_key"], hop["receipt"], signing_input, where + "/receipt")
        if (receipt["envelope_digest"], receipt["envelope_id"]) != (envelope_digest, env["envelope_id"]):
            raise Failure(f"{where}/receipt: answers another envelope")
        if (receipt["sender"], receipt["receiver"]) != (env["sender"], env["receiver"]):
            raise Failure(f"{where}/receipt: sender or receiver differs")
        outcomes = receipt["outcomes"]
        if len(outcomes) != env["count"]:
            raise Failure(f"{where}/receipt: {len(outcomes)} outcomes for {env['count']} items")
        outcome = outcomes[proof["index"]]
        if outcome["index"] != proof["index"] or outcome["item_hash"] != item_hash.hex():
            raise Failure(f"{where}/receipt: the outcome does not name the item")
        if outcome["status"] not in ("accepted", "duplicate", "new_version"):
            raise Failure(f"{where}/receipt: the item was {outcome['status']}")
        previous_receiver = env["receiver"]
        print(f"hop {i}: {env['sender']} -> {env['receiver']} {outcome['status']}")
    if previous_receiver is None:
        raise Failure("/hops: empty")
    return item_hash.hex()


def verify_registry(registry_jws, anchor):
    """The registry body and its keys by kid (member, key), after the root's signature."""
    header, registry, signing_input = decode_jws(registry_jws, REGISTRY_TYP)
    root = next((r for r in anchor if r["kid"] == header["kid"]), None)
    if root is None:
        raise Failure(f"/registry: signed by {header['kid']}, not a trusted root")
    check_signature(root["alg"], root["public_key"], registry_jws, signing_input, "/registry")
    return registry, {k["kid"]: (m["member_id"], k) for m in registry["members"] for k in m["keys"]}


def recognise(agreement, scheme_id, version, grade, valid_from, valid_to, today):
    """The band and verdict reason (None = recognised) of a result under an agreement."""
    mapping = next((s for s in agreement["schemes"] if s["scheme_id"] == scheme_id and version in s["versions"]), None)
    if mapping is None:
        return None, "scheme_not_covered"
    band = mapping["bands"].get(grade)
    if grade in mapping["not_rated"]:
        return band, "not_rated"
    if band is None:
        return None, "grade_not_mapped"
    if not valid_from <= today <= valid_to:
        return band, "evaluation_expired"
    return band, None


def verify_answer(bundle, anchor):
    """An evaluation answer bundle: the registry, the answer's signature, every agreement it
    names signed by every party, and every verdict recomputed."""
    _, registered = verify_registry(bundle["registry"], anchor)
    header, answer, signing_input = decode_jws(bundle["answer"], ANSWER_TYP)
    owner, key = registered.get(header["kid"], (None, None))
    if key is None or owner != answer["answerer"]:
        raise Failure(f"/answer: {header['kid']} is not a registered key of {answer['answerer']}")
    if not in_window(key, answer["answered_at"]):
        raise Failure(f"/answer: key {header['kid']} is not valid at {answer['answered_at']}")
    check_signature(key["alg"], key["public_key"], bundle["answer"], signing_input, "/answer")

    agreements = {}
    for i, ref in enumerate(answer["agreements"]):
        j, signed = next(
            ((j, a) for j, a in enumerate(bundle["agreements"]) if a["agreement"]["agreement_id"] == ref["agreement_id"]),
            (None, None),
        )
        if signed is None:
            raise Failure(f"/answer agreements/{i}: {ref['agreement_id']} is not in the bundle")
        body = signed["agreement"]
        text = jcs(body).encode()
        if sha256(text).hex() != ref["digest"]:
            raise Failure(f"/agreements/{j}: digest differs from the answer's")
        parties = set(body["parties"])
        if not {answer["answerer"], answer["asker"]} <= parties:
            raise Failure(f"/agreements/{j}: answerer and asker are not both parties")
        if not body["valid_from"] <= answer["as_of"] <= body["valid_to"]:
            raise Failure(f"/agreements/{j}: the answer's day {answer['as_of']} is outside the agreement")
        signed_by = set()
        for k, jws in enumerate(signed["signatures"]):
            where = f"/agreements/{j}/signatures/{k}"
            sig_header, sig_body, sig_input = decode_jws(jws, AGREEMENT_TYP)
            if jcs(sig_body).encode() != text:
                raise Failure(f"{where}: signs another text")
            member, sig_key = registered.get(sig_header["kid"], (None, None))
            if sig_key is None or member not in parties:
                raise Failure(f"{where}: {sig_header['kid']} is not a registered key of a party")
            if not sig_key["valid_from"][:10] <= body["valid_from"] <= sig_key["valid_to"][:10]:
                raise Failure(f"{where}: key {sig_header['kid']} is not valid on the agreement's first day")
            check_signature(sig_key["alg"], sig_key["public_key"], jws, sig_input, where)
            signed_by.add(member)
        if parties - signed_by:
            raise Failure(f"/agreements/{j}: not signed by {sorted(parties - signed_by)}")
        agreements[body["agreement_id"]] = body

    count = 0
    for s, subject in enumerate(answer["subjects"]):
        for e, ev in enumerate(subject["evaluations"]):
            where = f"/answer/subjects/{s}/evaluations/{e}"
            d = ev.get("disclosed")
            if d is None:
                covered = any(
                    recognise(a, ev["scheme_id"], ev["scheme_version"], "", "", "", "")[1] != "scheme_not_covered"
                    for a in agreements.values()
                )
                if ev.get("reason") != "scheme_not_covered" or covered:
                    raise Failure(f"{where}: details withheld for a covered scheme")
                continue
            agreement = agreements.get(d["agreement_id"])
            if agreement is None:
                raise Failure(f"{where}: agreement {d['agreement_id']} is not among the answer's")
            band, reason = recognise(
                agreement, ev["scheme_id"], ev["scheme_version"], d["grade"], d["valid_from"], d["valid_to"], answer["as_of"]
            )
            verdict = "recognised" if reason is None else "not_recognised"
            if reason == "scheme_not_covered" or (band, verdict, reason) != (d.get("band"), ev["verdict"], ev.get("reason")):
                raise Failure(f"{where}: the agreement gives {band} {verdict} {reason}, the answer says otherwise")
            count += 1
    print(f"answer {answer['answer_id']}: {answer['answerer']} -> {answer['asker']}, {count} verdicts checked")
    return answer["answer_id"]


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], "rb") as f:
        bundle = loads(f.read())
    with open(argv[2], "rb") as f:
        anchor = loads(f.read())
    try:
        if bundle.get("typ") == ANSWER_EVIDENCE_TYP:
            print(f"ok: evaluation answer {verify_answer(bundle, anchor)}")
            return 0
        item_hash = verify(bundle, anchor)
    except Unsupported as e:
        print(f"UNSUPPORTED: {e}")
        return 2
    except (Failure, KeyError, TypeError, ValueError, IndexError) as e:
        print(f"FAILED: {e}")
        return 1
    print(f"ok: item sha-256 {item_hash}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
