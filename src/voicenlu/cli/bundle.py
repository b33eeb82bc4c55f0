"""``voicenlu bundle``: sign a bundle and check its signature; write its speech settings again."""

from __future__ import annotations

import json


def add_commands(sub) -> None:
    bundle = sub.add_parser(
        "bundle",
        help="sign a bundle and check its signature (Ed25519; needs voicenlu[sign])",
        description="Sign the manifest digest of a bundle, which covers the manifest and "
        "every file it lists, so a server started with --require-signature refuses a bundle "
        "changed by anyone without the private key.",
    )
    bundle_sub = bundle.add_subparsers(dest="bundle_command", required=True, metavar="ACTION")
    p = bundle_sub.add_parser("keygen", help="make a key pair: KEY (private) and KEY.pub")
    p.add_argument("key", help="path of the private key to write")
    p.set_defaults(func=cmd_bundle_keygen)
    p = bundle_sub.add_parser("sign", help="write BUNDLE/voicenlu.sig")
    p.add_argument("bundle", help="model bundle directory")
    p.add_argument("--key", required=True, help="the private key (from `bundle keygen`)")
    p.set_defaults(func=cmd_bundle_sign)
    p = bundle_sub.add_parser("verify", help="check BUNDLE/voicenlu.sig with a public key")
    p.add_argument("bundle", help="model bundle directory")
    p.add_argument("--public-key", required=True, help="the public key (KEY.pub)")
    p.set_defaults(func=cmd_bundle_verify)
    p = bundle_sub.add_parser(
        "speech",
        help="write BUNDLE/speech.json again from its training data (the recogniser's "
        "prompt, vocabulary and closed-domain grammar)",
    )
    p.add_argument("bundle", help="model bundle directory")
    p.add_argument("--data-dir", default=None, help="where the SNIPS data lives")
    p.set_defaults(func=cmd_bundle_speech)


def cmd_bundle_keygen(args) -> int:
    from voicenlu.signing import generate_key

    public = generate_key(args.key)
    print(f"private key: {args.key} (keep it off the bundle storage)\npublic key:  {public}")
    return 0


def cmd_bundle_sign(args) -> int:
    from voicenlu.signing import sign_bundle

    print(f"signed: {sign_bundle(args.bundle, args.key)}")
    return 0


def cmd_bundle_verify(args) -> int:
    from voicenlu.signing import verify_bundle

    digest = verify_bundle(args.bundle, args.public_key)
    print(f"{args.bundle}: signature good (manifest digest {digest})")
    return 0


def cmd_bundle_speech(args) -> int:
    from voicenlu.pipeline import speech_settings

    print(json.dumps(speech_settings(args.bundle, args.data_dir)))
    return 0
