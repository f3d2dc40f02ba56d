#!/usr/bin/python3
"""RFC 8555 §7.3.5 account key rollover against an ra-mesh edge with python3-acme (Debian).

python3-acme 2.1.0 has no key-change call, so the nested JWS is built here with its own jws module,
exactly as §7.3.5 describes: the inner JWS is signed by the new key ("jwk", "url", no "nonce") over
{"account", "oldKey"}; the outer JWS is an ordinary request signed by the current key ("kid").

Steps: register an account with an RSA key (RS256), roll it over to a new EC P-256 key (ES256), then
  - ask for the account with the old key (kid) and look it up by the old key (onlyReturnExisting):
    both must be refused;
  - look it up by the new key: the same account URL;
  - try to roll over to a key that another account holds: 409 with that account's URL;
  - order a certificate for NAME with the new key (http-01, answered by a small http.server on the
    edge's http01 port).
Prints one JSON line with what the server answered and the issued chain.

Usage: acme_key_rollover.py DIRECTORY_URL HTTP01_PORT NAME   (trust the edge via REQUESTS_CA_BUNDLE)
"""
import http.server
import json
import sys
import threading
from datetime import datetime, timedelta

import josepy as jose
from acme import challenges, client, crypto_util, errors, jws, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

TOKENS = {}
JOSE = {'Content-Type': 'application/jose+json'}


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


def network(key, alg, account=None):
    return client.ClientNetwork(key, account=account, alg=alg, user_agent='ra-mesh-e2e-rollover')


def raw_post(net, directory, url, obj):
    """A signed POST whose answer is returned as it is (status, Location, JSON body), errors included."""
    nonce = net._get_nonce(url, directory['newNonce'])  # pylint: disable=protected-access
    data = net._wrap_in_jws(obj, nonce, url)  # pylint: disable=protected-access
    resp = net._send_request('POST', url, data=data, headers=dict(JOSE))  # pylint: disable=protected-access
    net._add_nonce(resp)  # pylint: disable=protected-access
    try:
        body = resp.json()
    except ValueError:
        body = None
    return {'status': resp.status_code, 'location': resp.headers.get('Location'), 'body': body}


def lookup(directory, key, alg):
    """newAccount with onlyReturnExisting (RFC 8555 §7.3.1): the account URL, or the problem type."""
    acme = client.ClientV2(directory, net=network(key, alg))
    try:
        acme.new_account(messages.NewRegistration.from_data(only_return_existing=True))
    except errors.ConflictError as e:
        return {'url': e.location}
    except messages.Error as e:
        return {'type': e.typ}
    return {'unexpected': 'a new account was created'}


def key_change(net, directory, account_url, old_jwk, new_jwk, new_alg):
    """RFC 8555 §7.3.5: outer JWS by the current key (net), inner JWS by the new key."""
    url = directory['keyChange']
    payload = json.dumps({'account': account_url, 'oldKey': old_jwk.public_key().to_partial_json()}).encode()
    inner = jws.JWS.sign(payload, key=new_jwk, alg=new_alg, nonce=None, url=url, kid=None)
    return raw_post(net, directory, url, inner)


def order(acme, account_jwk, name):
    cert_key = ec.generate_private_key(ec.SECP256R1())
    pem = cert_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    orderr = acme.new_order(crypto_util.make_csr(pem, [name]))
    for authz in orderr.authorizations:
        for chall in authz.body.challenges:
            if isinstance(chall.chall, challenges.HTTP01):
                # The key authorization carries the thumbprint of the account's current (new) key.
                response, validation = chall.response_and_validation(account_jwk)
                TOKENS[chall.chall.encode('token')] = validation
                acme.answer_challenge(chall, response)
    return acme.poll_and_finalize(orderr, deadline=datetime.now() + timedelta(seconds=90)).fullchain_pem


def main():
    directory_url, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    server = http.server.ThreadingHTTPServer(('127.0.0.1', port), Http01Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        old_jwk = jose.JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
        new_jwk = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        other_jwk = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))

        directory = client.ClientV2.get_directory(directory_url, network(old_jwk, jose.RS256))
        acme = client.ClientV2(directory, net=network(old_jwk, jose.RS256))
        regr = acme.new_account(messages.NewRegistration.from_data(email='ops@example.test', terms_of_service_agreed=True))

        rolled = key_change(acme.net, directory, regr.uri, old_jwk, new_jwk, jose.ES256)

        # The old key, with the account URL as kid (a client that missed the rollover) and by lookup.
        stale = raw_post(network(old_jwk, jose.RS256, account=regr), directory, regr.uri, None)
        stale_lookup = lookup(directory, old_jwk, jose.RS256)
        new_lookup = lookup(directory, new_jwk, jose.ES256)

        # A key another account holds cannot become this account's key (409, Location of the holder).
        other = client.ClientV2(directory, net=network(other_jwk, jose.ES256))
        other_regr = other.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
        current = network(new_jwk, jose.ES256, account=regr)
        conflict = key_change(current, directory, regr.uri, new_jwk, other_jwk, jose.ES256)

        fullchain = order(client.ClientV2(directory, net=current), new_jwk, name)
        print(json.dumps({
            'account': regr.uri,
            'otherAccount': other_regr.uri,
            'rolled': rolled,
            'stale': stale,
            'staleLookup': stale_lookup,
            'newLookup': new_lookup,
            'conflict': conflict,
            'fullchain': fullchain,
        }))
    finally:
        server.shutdown()


if __name__ == '__main__':
    main()
