"""Who may call the model server: TLS (mutual for gRPC when a client CA is given) and a bearer token.

Off by default for a developer's machine (the server then binds to localhost); a cluster sets a token and TLS, and
its NetworkPolicy (infra/serving) lets only the portal's worker and the pipeline reach the pods at all.
"""

import dataclasses
import hmac

import grpc

BEARER = "bearer "


def read_file(path: str | None) -> bytes | None:
    """A PEM or token file's bytes (None for no path)."""
    if not path:
        return None
    with open(path, "rb") as handle:
        return handle.read()


def token_matches(header: str, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (constant-time comparison)."""
    if not header.lower().startswith(BEARER):
        return False
    return hmac.compare_digest(header[len(BEARER):].strip().encode(), token.encode())


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """PEM files: the server's certificate and key, and for mutual TLS the CA that signs its clients."""

    certificate: str
    key: str
    client_ca: str | None = None

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        return read_file(self.certificate), read_file(self.key), read_file(self.client_ca)

    def grpc_credentials(self) -> grpc.ServerCredentials:
        certificate, key, client_ca = self.read()
        return grpc.ssl_server_credentials([(key, certificate)], root_certificates=client_ca,
                                           require_client_auth=client_ca is not None)

    def ssl_context(self):
        """REST's TLS context. With a client CA a client certificate is verified when one is presented but not
        required: the cluster's probes and Prometheus present none; every /v1 call still needs the token."""
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certificate, self.key)
        if self.client_ca:
            context.load_verify_locations(self.client_ca)
            context.verify_mode = ssl.CERT_OPTIONAL
        return context


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuses every gRPC call without ``authorization: Bearer <token>`` metadata (UNAUTHENTICATED)."""

    def __init__(self, token: str):
        self._token = token

        def refuse(_request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self._refusal = grpc.unary_unary_rpc_method_handler(refuse)

    def intercept_service(self, continuation, handler_call_details):
        metadata = dict(handler_call_details.invocation_metadata or ())
        if token_matches(metadata.get("authorization", ""), self._token):
            return continuation(handler_call_details)
        return self._refusal
