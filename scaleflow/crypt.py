"""`python -m scaleflow.crypt`: make encrypted inputs, read them back, make keys, open sealed exports.

    python -m scaleflow.crypt keygen > data.key                     # a new 256-bit key (hex)
    python -m scaleflow.crypt encrypt --key-file data.key train.csv -o train.csv.enc
    python -m scaleflow.crypt encrypt --key-env DATA_KEY data/*.tfrecord --suffix .enc
    python -m scaleflow.crypt decrypt --key-file data.key train.csv.enc -o -      # to stdout
    python -m scaleflow.crypt unseal --key-file data.key export/mlp/3.sealed -o /srv/models/mlp

Training reads the encrypted files directly (data.encryption.key_env / key_file), decrypting in
memory. Errors (missing key, wrong key, truncated file) are one line naming the file, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from scaleflow.errors import ScaleflowError
from scaleflow.export import seal
from scaleflow.security import crypto


def _key(args) -> bytes:
    key = crypto.load_key(args.key_env, args.key_file, "--key-env", "--key-file")
    if key is None:
        raise ScaleflowError("give the key with --key-env VAR or --key-file PATH")
    return key


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scaleflow.crypt", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("keygen", help="print a new 256-bit key (64 hex digits)")
    for name, text in (("encrypt", "encrypt files (AES-256-GCM)"), ("decrypt", "decrypt files"),
                       ("unseal", "check, decrypt and unpack a sealed export (export.seal=true)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("files", nargs="+")
        p.add_argument("--key-env", help="environment variable holding the key")
        p.add_argument("--key-file", help="file holding the key")
        p.add_argument("-o", "--output", help="output file (one input; '-' = stdout for decrypt) or directory")
        p.add_argument("--suffix", default=".enc" if name == "encrypt" else "",
                       help="without -o: output = input + suffix (encrypt) / input minus suffix (decrypt)")
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            print(crypto.new_key())
            return
        key = _key(args)
        if args.command == "unseal":
            for path in args.files:
                print(seal.unseal(path, key, args.output or "."))
            return
        if args.output and len(args.files) > 1 and not os.path.isdir(args.output):
            raise ScaleflowError("several inputs need -o to be an existing directory")
        for path in args.files:
            if args.command == "decrypt" and args.output == "-":
                sys.stdout.buffer.write(crypto.decrypt_file(path, key))
                continue
            if args.output:
                out = os.path.join(args.output, os.path.basename(path)) if os.path.isdir(args.output) else args.output
            elif args.command == "encrypt":
                out = path + args.suffix
            else:
                out = path[: -len(args.suffix)] if args.suffix and path.endswith(args.suffix) else path + ".dec"
            if args.command == "encrypt":
                if crypto.is_encrypted(path):
                    raise ScaleflowError(f"{path}: already encrypted")
                crypto.encrypt_file(path, out, key)
            else:
                clear = crypto.decrypt_file(path, key)
                with open(out, "wb") as f:
                    f.write(clear)
            print(out)
    except (ScaleflowError, OSError) as e:  # ConfigError/DataError included: one line, exit 2
        print(f"scaleflow.crypt: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
