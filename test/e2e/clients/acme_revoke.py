#!/usr/bin/python3
"""RFC 8555 revocation through an ra-mesh edge with python3-acme (Debian), as a real client does it.

Registers an account, orders two certificates with http-01 (answered by a small http.server on the
edge's http01 port), finalizes, downloads, then revokes the first with the account key and the
second with the certificate's own key, and checks that revoking the first again is alreadyRevoked.
Prints one JSON line: {"serials": [...], "reasons": [...], "again": "<problem type>"}.

Usage: acme_revoke.py DIRECTORY_URL HTTP01_PORT NAME1 NAME2   (trust the edge via REQUESTS_CA_BUNDLE)
"""
import http.server
import json
import sys
import threading
from datetime import datetime, timedelta

import josepy as jose
import OpenSSL
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

TOKENS = {}


class Http01Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        prefix = '/.well-known/acme-challenge/'
        value = TOKENS.get(self.path[len(prefix):]) if self.path.startswith(prefix) else None
        self.send_response(200 if value else 404)
        self.send_header('Content-Type', 'text/plain')
        self.end_headers()
        self.wfile.write((value or 'not found').encode())

    def log_message(self, *args):
        pass


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def acme_client(directory_url, key, account=None):
    net = client.ClientNetwork(jose.JWKRSA(key=key), account=account, user_agent='ra-mesh-e2e')
    return client.ClientV2(client.ClientV2.get_directory(directory_url, net), net=net)


def obtain(acme, name, acct_key):
    cert_key = new_key()
    order = acme.new_order(crypto_util.make_csr(pem_key(cert_key), [name]))
    for authz in order.authorizations:
        for chall in authz.body.challenges:
            if isinstance(chall.chall, challenges.HTTP01):
                response, validation = chall.response_and_validation(jose.JWKRSA(key=acct_key))
                TOKENS[chall.chall.encode('token')] = validation
                acme.answer_challenge(chall, response)
    order = acme.poll_and_finalize(order, deadline=datetime.now() + timedelta(seconds=90))
    leaf_pem = order.fullchain_pem.split('-----END CERTIFICATE-----')[0] + '-----END CERTIFICATE-----\n'
    cert = OpenSSL.crypto.load_certificate(OpenSSL.crypto.FILETYPE_PEM, leaf_pem.encode())
    return cert, cert_key


def main():
    directory_url, port, name1, name2 = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    server = http.server.ThreadingHTTPServer(('127.0.0.1', port), Http01Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        acct_key = new_key()
        acme = acme_client(directory_url, acct_key)
        acme.new_account(messages.NewRegistration.from_data(email='ops@example.test', terms_of_service_agreed=True))
        cert1, _ = obtain(acme, name1, acct_key)
        cert2, key2 = obtain(acme, name2, acct_key)

        # RFC 8555 §7.6: revocation signed by the account that ordered the certificate (kid) ...
        acme.revoke(jose.ComparableX509(cert1), 4)
        # ... and by the certificate's own key (jwk), with no account at all.
        by_cert_key = acme_client(directory_url, key2)
        by_cert_key.revoke(jose.ComparableX509(cert2), 1)

        again = None
        try:
            acme.revoke(jose.ComparableX509(cert1), 4)
        except messages.Error as e:
            again = e.typ
        except errors.Error as e:
            again = 'unexpected: %r' % (e,)
        print(json.dumps({
            'serials': [format(cert1.get_serial_number(), 'x'), format(cert2.get_serial_number(), 'x')],
            'reasons': [4, 1],
            'again': again,
        }))
    finally:
        server.shutdown()


if __name__ == '__main__':
    main()
