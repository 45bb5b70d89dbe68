"""The REST API (``/api/v1``, OpenAPI at ``/api/v1/openapi.json``, docs at ``/api/docs``).

``router`` holds every ``/api/v1`` route: accounts, invoices and billing runs
(:mod:`bluerocktel.api.routes`), Factur-X, credit notes, payments, usage and the audit log
(:mod:`bluerocktel.api.billing_resources`), CDR mediation under ``/api/v1/cdr`` (:mod:`bluerocktel.api.cdr`),
rating traces, the unrated queue and anomalies (:mod:`bluerocktel.api.rating`), services,
tickets and webhooks (:mod:`bluerocktel.api.crm`), accounts, contacts, sites, contracts, catalog
and quotes (:mod:`bluerocktel.api.crm_resources`) and the 3CX CRM integration
(:mod:`bluerocktel.api.threecx`).
"""

from bluerocktel.api.billing_resources import router as billing_router
from bluerocktel.api.cdr import router as cdr_router
from bluerocktel.api.crm import router as crm_router
from bluerocktel.api.crm_resources import router as crm_resources_router
from bluerocktel.api.problems import install_problem_handlers
from bluerocktel.api.rating import router as rating_router
from bluerocktel.api.threecx import router as threecx_router
from bluerocktel.api.routes import router

router.include_router(cdr_router)
router.include_router(billing_router)
router.include_router(rating_router)
router.include_router(crm_router)
router.include_router(crm_resources_router)
router.include_router(threecx_router)

__all__ = ["install_problem_handlers", "router"]
