"""Schemathesis hooks for tests/api/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

The run may revoke any token but the one it runs with: the stateful phase follows links it
infers, such as a token's id from GET /api/v1/tokens to DELETE /api/v1/tokens/{id}, and once it
picked the run's own admin token every later request was a 401 and nothing more was tested.
Such a call is sent for a token id that does not exist instead (a documented 404).
"""

import os

import schemathesis

OWN_TOKEN_ID = os.environ["LOCALHOSTD_ST_OWN_TOKEN_ID"]
NO_SUCH_TOKEN = "0" * 16


@schemathesis.hook
def before_call(context, case, kwargs):
    if (
        case.method.upper() == "DELETE"
        and case.operation.path == "/api/v1/tokens/{id}"
        and (case.path_parameters or {}).get("id") == OWN_TOKEN_ID
    ):
        case.path_parameters["id"] = NO_SUCH_TOKEN
