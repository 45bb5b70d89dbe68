"""Build a demo operator in the system of record, deterministically from a seed."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from bluerocktel.audit import record_audit
from bluerocktel.db.models import (
    Account, AuditEntry, Brand, Bundle, CarrierTrunk, CdrSource, Contact, Contract, Discount, DunningStage,
    OneOffCharge, Product, Rate, RateDeck, SepaMandate, Service, ServiceBundle, ServiceIdentifier, TimeBand, User,
)
from bluerocktel.demo import data
from bluerocktel.demo.cdrs import MALFORMED_LINES, CallerLine, write_asterisk_master_csv
from bluerocktel.errors import UserFacingError
from decimal import ROUND_HALF_UP

from bluerocktel.billing.scheduler import add_schedule
from bluerocktel.money import D, quantize
from bluerocktel.security import hash_password
from bluerocktel.vocabulary import (
    AccountKind, ChargeKind, ContactRole, ContractStatus, IdentifierKind, PaymentMethod, RateDeckKind, SequenceType,
    ServiceStatus,
)

PARIS = ZoneInfo("Europe/Paris")
UTC = dt.timezone.utc
DEMO_AUDIT_ACTION = "demo.build"
DEMO_SOURCE = "demo-asterisk"


@dataclass
class DemoSummary:
    """What :func:`build_demo` created; :meth:`describe` is the text printed to the operator."""

    period: str
    seed: int
    brands: list[str]
    accounts: int
    business_accounts: int
    consumer_accounts: int
    services: int
    identifiers: int
    rates: int
    bundles: int
    activated_in_period: int
    terminated_in_period: int
    users: list[tuple[str, str]] = field(default_factory=list)   # (e-mail, role)
    password: str = data.DEMO_PASSWORD
    csv_path: str | None = None
    cdrs_written: int = 0
    malformed_lines: int = 0
    mandates: int = 0
    showcase: dict[str, str] = field(default_factory=dict)   # role -> account number

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        lines = [
            f"demo operator for {self.period} (seed {self.seed}): brands {', '.join(self.brands)}",
            f"  {self.accounts} accounts ({self.business_accounts} business, {self.consumer_accounts} consumer), "
            f"{self.services} services ({self.bundles} with a bundle), {self.identifiers} identifiers, "
            f"{self.rates} sell rates, a carrier buy deck",
            f"  {self.activated_in_period} accounts activated and {self.terminated_in_period} terminated "
            "during the period",
        ]
        if self.showcase:
            lines.append(f"  {self.mandates} SEPA direct-debit mandates; showcase accounts: "
                         + ", ".join(f"{number} {role}" for role, number in self.showcase.items()))
        stages = ", ".join(f"+{days} days {name.lower()}" for _p, name, days, _a, _f in data.DUNNING_STAGES)
        name, cron, job, _params = data.MONTHLY_BILLING
        lines.append(f"  dunning: {stages}; schedule {name} ({cron}, {job})")
        if self.csv_path:
            lines.append(f"  {self.cdrs_written} CDRs + {self.malformed_lines} malformed lines written to "
                         f"{self.csv_path}")
        lines.append(f"  sign in with any of these (password: {self.password}):")
        lines += [f"    {email:<40} {role}" for email, role in self.users]
        return "\n".join(lines)


def previous_month(today: dt.date | None = None) -> str:
    today = today or dt.date.today()
    first = today.replace(day=1) - dt.timedelta(days=1)
    return first.strftime("%Y-%m")


def period_bounds(period: str) -> tuple[dt.date, dt.date]:
    """``[first day, first day of next month)`` of ``YYYY-MM``."""
    try:
        start = dt.datetime.strptime(period, "%Y-%m").date()
    except ValueError:
        raise UserFacingError(f"period {period!r} is not YYYY-MM") from None
    end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return start, end


def luhn_check_digit(stem: str) -> str:
    """The digit that makes ``stem`` + digit pass the Luhn check (SIREN/SIRET key)."""
    total = 0
    for i, ch in enumerate(reversed(stem)):
        n = int(ch) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return number.isdigit() and luhn_check_digit(number[:-1]) == number[-1]


def fr_vat_number(siren: str) -> str:
    """French intra-community VAT number of a SIREN: ``FR`` + 2-digit key + SIREN."""
    return f"FR{(12 + 3 * (int(siren) % 97)) % 97:02d}{siren}"


def siret_of(siren: str, nic: str = "0001") -> str:
    """SIRET of an establishment: SIREN + its 4-digit number + the Luhn digit over all 14."""
    stem = siren + nic
    return stem + luhn_check_digit(stem)


def _mod97_digits(text: str) -> int:
    """``text`` (digits and capitals) as the number ISO 7064 mod 97-10 reads: A = 10 ... Z = 35."""
    return int("".join(str(int(ch, 36)) for ch in text))


def iban_check_digits(country: str, bban: str) -> str:
    """The two IBAN check digits (ISO 13616) of ``bban`` in ``country``; the SEPA creditor id uses the same."""
    return f"{98 - _mod97_digits(bban + country + '00') % 97:02d}"


def iban_valid(iban: str) -> bool:
    compact = iban.replace(" ", "")
    return len(compact) > 4 and compact.isalnum() and _mod97_digits(compact[4:] + compact[:4]) % 97 == 1


def fr_iban(bank: str, branch: str, account: str) -> str:
    """French IBAN, grouped by four: the RIB key ``97 - (89 bank + 15 branch + 3 account) mod 97``, then
    the IBAN check digits."""
    key = 97 - (89 * int(bank) + 15 * int(branch) + 3 * int(account)) % 97
    bban = f"{bank}{branch}{account}{key:02d}"
    iban = "FR" + iban_check_digits("FR", bban) + bban
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4))


def sepa_creditor_id(country: str, national_id: str) -> str:
    """SEPA creditor identifier: country, check digits (over the national id), ``ZZZ``, national id."""
    return f"{country}{iban_check_digits(country, national_id)}ZZZ{national_id}"


def be_vat_number(stem: str) -> str:
    """Belgian VAT number of an 8-digit enterprise-number stem: ``BE`` + stem + ``97 - stem mod 97``."""
    return f"BE{stem}{97 - int(stem) % 97:02d}"


def ch_uid(stem: str) -> str:
    """Swiss UID (VAT) number ``CHE-123.456.789 TVA`` of an 8-digit stem, with its mod-11 check digit."""
    check = 11 - sum(w * int(d) for w, d in zip((5, 4, 3, 2, 7, 6, 5, 4), stem)) % 11
    if check == 10:
        raise ValueError(f"no Swiss UID has the stem {stem}")
    digits = stem + str(check % 11)
    return f"CHE-{digits[:3]}.{digits[3:6]}.{digits[6:]} TVA"


def _brand(b: dict) -> Brand:
    """A brand with its full seller legal identity derived from :data:`data.BRANDS`."""
    siren = b["siren_stem"] + luhn_check_digit(b["siren_stem"])
    fields = {k: v for k, v in b.items() if k not in ("siren_stem", "rcs_city", "ics_national_id", "bank",
                                                      "late_penalty_rate")}
    return Brand(**fields, siren=siren, siret=siret_of(siren), vat_number=fr_vat_number(siren), country="FR",
                 rcs=f"RCS {b['rcs_city']} {siren[:3]} {siren[3:6]} {siren[6:]}", iban=fr_iban(*b["bank"]),
                 sepa_creditor_id=sepa_creditor_id("FR", b["ics_national_id"]),
                 late_penalty_rate=D(b["late_penalty_rate"]))


def _siren(rng: random.Random) -> str:
    stem = f"{rng.randint(3, 9)}{rng.randint(0, 9_999_999):07d}"
    return stem + luhn_check_digit(stem)


def _utc_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=PARIS).astimezone(UTC)


def _add_months(day: dt.date, months: int) -> dt.date:
    y, m = divmod(day.month - 1 + months, 12)
    return dt.date(day.year + y, m + 1, min(day.day, 28))


def _sell_deck(rates_from: dt.datetime) -> RateDeck:
    """The sell deck: a rate per prefix, plus an off-peak rate for international zones."""
    deck = RateDeck(code=data.SELL_DECK[0], name=data.SELL_DECK[1], kind=RateDeckKind.SELL.value, currency="EUR",
                    holiday_calendar="FR")
    deck.bands = [TimeBand(name=name, days=days, start_minute=start, end_minute=end, priority=priority)
                  for name, days, start, end, priority in data.SELL_BANDS]
    deck.rates = []
    for prefix, dest, zone, price, fee, first, nxt in data.RATES:
        common = dict(prefix=prefix, destination=dest, zone=zone, connection_fee=D(fee), first_increment=first,
                      next_increment=nxt, valid_from=rates_from)
        deck.rates.append(Rate(**common, price=D(price)))
        if zone in data.OFFPEAK_ZONES:
            offpeak = quantize(D(price) * D(data.OFFPEAK_FACTOR), 4, ROUND_HALF_UP)
            deck.rates.append(Rate(**common, band="offpeak", price=offpeak))
    return deck


def _buy_deck(rates_from: dt.datetime) -> RateDeck:
    """The carrier's deck (what calls cost us) and the trunk calls leave through."""
    deck = RateDeck(code=data.BUY_DECK[0], name=data.BUY_DECK[1], kind=RateDeckKind.BUY.value, currency="EUR")
    deck.rates = [Rate(prefix=prefix, destination=dest, zone=zone, first_increment=1, next_increment=1,
                       valid_from=rates_from,
                       price=D(data.BUY_OVERRIDES[prefix]) if prefix in data.BUY_OVERRIDES
                       else quantize(D(price) * D(data.BUY_PRICE_SHARE), 4, ROUND_HALF_UP))
                  for prefix, dest, zone, price, _fee, _first, _nxt in data.RATES]
    name, trunk = data.CARRIER_TRUNK
    deck.trunks = [CarrierTrunk(name=name, trunk=trunk, valid_from=rates_from)]
    return deck


def find_demo(session) -> dict | None:
    """The details of a previous :func:`build_demo` in this data dir, or None."""
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == DEMO_AUDIT_ACTION)
                           .order_by(AuditEntry.id.desc()).limit(1))
    return dict(entry.details) if entry is not None else None


def build_demo(wb, accounts: int = 300, cdrs: int = 200_000, period: str | None = None, seed: int = 7,
               actor: str = "demo") -> DemoSummary:
    """Create two brands, staff and customer users, a catalog, a sell rate deck and ``accounts``
    accounts with contacts, contracts and services in an empty data dir; when ``cdrs`` > 0 also
    write a month of Asterisk CDRs for them to ``DATA_DIR/incoming/Master.csv``.

    Everything is drawn from ``random.Random(seed)`` (and numpy's generator seeded alike for the
    CDRs), so the same seed, period and sizes give the same data and the same CSV bytes.
    """
    period = period or previous_month()
    p_start, p_end = period_bounds(period)
    if accounts < 1:
        raise UserFacingError("the demo needs at least one account")
    rng = random.Random(seed)
    password_hash = hash_password(data.DEMO_PASSWORD)   # one hash for all demo users: it is demo data
    users: list[tuple[str, str]] = []
    with wb.db.transaction() as s:
        if s.scalar(select(func.count()).select_from(Brand)):
            raise UserFacingError("this data dir has brands already: build the demo in an empty data dir")
        brands = [_brand(b) for b in data.BRANDS]
        s.add_all(brands)
        products = {code: Product(code=code, name=name, kind=kind, price=D(price), vat_rate=D("0.20"),
                                  billing_period_months=months, billing_timing=timing)
                    for code, name, kind, price, months, timing in data.PRODUCTS}
        s.add_all(products.values())
        rates_from = _utc_midnight(dt.date(p_start.year - 1, 1, 1))
        deck = _sell_deck(rates_from)
        s.add(deck)
        s.add(_buy_deck(rates_from))
        bundles = {code: Bundle(code=code, name=name, call_type=call_type, zones=zones, allowance=allowance,
                                fair_use_cap=cap)
                   for code, name, call_type, zones, allowance, cap in data.BUNDLES}
        s.add_all(bundles.values())
        s.add_all(DunningStage(brand_id=None, position=position, name=name, days_after_due=days, action=action,
                               fee=D(fee) if fee else None)
                  for position, name, days, action, fee in data.DUNNING_STAGES)
        s.add(CdrSource(name=DEMO_SOURCE, format="asterisk-csv", url=None, country="FR",
                        timezone="Europe/Paris", options={"note": "demo Asterisk PBX platform"}))
        for role, local, name in data.STAFF:
            email = f"{local}@{data.STAFF_DOMAIN}"
            s.add(User(email=email, name=name, password_hash=password_hash, role=role))
            users.append((email, role))
        s.flush()

        extra = random.Random(f"billing-{seed}")   # the billing additions: the draws above stay as they were
        business: list[tuple[Account, Contract]] = []
        installs: list[tuple[Account, Service, dt.date]] = []
        counts = dict(business=0, consumer=0, services=0, identifiers=0, bundles=0, activated=0, terminated=0)
        used_blocks: set[str] = set()

        def number_block(zone: str) -> str:
            while True:   # 7 digits after +33: zone, then 6; the block holds 100 numbers
                block = f"{zone}{rng.randint(20, 99)}{rng.randint(0, 9999):04d}"
                if block not in used_blocks:
                    used_blocks.add(block)
                    return "+33" + block

        for i in range(1, accounts + 1):
            number = f"C{i:06d}"
            brand = rng.choices(brands, weights=data.BRAND_WEIGHTS)[0]
            city, postcode, zone = rng.choice(data.CITIES)
            kind = AccountKind.BUSINESS if rng.random() < 0.85 else AccountKind.CONSUMER
            first, last = rng.choice(data.FIRST_NAMES), rng.choice(data.LAST_NAMES)
            street = f"{rng.randint(1, 180)} {rng.choice(data.STREETS)}"
            # lifecycle: a few accounts start or end inside the period, the others run all month
            fate = rng.random()
            if fate < 0.04:
                start = p_start + dt.timedelta(days=rng.randint(3, (p_end - p_start).days - 5))
                end = None
                counts["activated"] += 1
            else:
                start = p_start - dt.timedelta(days=rng.randint(30, 3 * 365))
                end = None
                if fate > 0.97:
                    end = p_start + dt.timedelta(days=rng.randint(3, (p_end - p_start).days - 5))
                    counts["terminated"] += 1
            domain = f"{rng.choice(['orange.fr', 'free.fr', 'gmail.com', 'laposte.net', 'sfr.fr'])}"
            if kind is AccountKind.BUSINESS:
                counts["business"] += 1
                name = f"{rng.choice(data.COMPANY_STEMS)} {last} {rng.choice(data.COMPANY_SUFFIXES)}"
                siren = _siren(rng)
                slug = "".join(ch for ch in last.lower() if ch.isalpha())
                domain = f"{slug}-{i}.fr"
                account = Account(number=number, brand_id=brand.id, kind=kind.value, name=name, siren=siren,
                                  siret=siret_of(siren, f"{extra.choice([1, 1, 1, 2, 3]):04d}"),
                                  vat_number=fr_vat_number(siren), email=f"compta@{domain}")
            else:
                counts["consumer"] += 1
                account = Account(number=number, brand_id=brand.id, kind=kind.value, name=f"{first} {last}",
                                  email=f"{first.lower()}.{last.lower()}{i}@{domain}".replace("é", "e")
                                  .replace("è", "e").replace("ç", "c").replace("ï", "i"))
            account.address, account.postcode, account.city = street, postcode, city
            account.payment_method = "sepa_debit" if rng.random() < 0.6 else "transfer"
            account.created_at = _utc_midnight(start)
            account.contacts = [Contact(first_name=first, last_name=last, email=account.email,
                                        role=ContactRole.BILLING.value)]
            if kind is AccountKind.BUSINESS and rng.random() < 0.5:
                tf, tl = rng.choice(data.FIRST_NAMES), rng.choice(data.LAST_NAMES)
                account.contacts.append(Contact(first_name=tf, last_name=tl, email=f"it@{domain}",
                                                role=ContactRole.TECHNICAL.value))
            s.add(account)
            s.flush()
            term = rng.choice([12, 24, 36]) if kind is AccountKind.BUSINESS else 12
            contract = Contract(account_id=account.id, reference=f"CT-{start.year}-{i:06d}",
                                status=(ContractStatus.ENDED if end else ContractStatus.ACTIVE).value,
                                start_date=start, end_date=end, term_months=term,
                                commitment_end=_add_months(start, term), notice_days=30 if term == 12 else 90)
            s.add(contract)
            s.flush()

            def service(code, label, quantity=1, deck_id=None, idents=()):
                svc = Service(account_id=account.id, contract_id=contract.id, product_id=products[code].id,
                              rate_deck_id=deck_id, label=label, quantity=quantity, activated_on=start,
                              terminated_on=end,
                              status=(ServiceStatus.TERMINATED if end else ServiceStatus.ACTIVE).value)
                svc.identifiers = [ServiceIdentifier(kind=k.value, value=v, valid_from=_utc_midnight(start),
                                                     valid_to=_utc_midnight(end) if end else None)
                                   for k, v in idents]
                bundle = data.BUNDLE_FOR_PRODUCT.get(code)
                if bundle and (code != "SIP-CH" or quantity >= data.SIP_BUNDLE_MIN_CHANNELS):
                    svc.bundles = [ServiceBundle(bundle=bundles[bundle], valid_from=_utc_midnight(start),
                                                 valid_to=_utc_midnight(end) if end else None)]
                    counts["bundles"] += 1
                s.add(svc)
                counts["services"] += 1
                counts["identifiers"] += len(idents)
                return svc

            if kind is AccountKind.BUSINESS:
                block = number_block(zone)
                main = block + "00"
                if rng.random() < 0.75:
                    channels = rng.choice([2, 2, 4, 4, 4, 6, 8, 10, 10, 15, 20, 30])
                    service("SIP-CH", f"Trunk SIP {channels} canaux", channels, deck.id,
                            [(IdentifierKind.ACCOUNT_CODE, number), (IdentifierKind.NUMBER, main),
                             (IdentifierKind.TRUNK, f"trunk-{number.lower()}")])
                    dids = max(2, min(99, channels * rng.choice([1, 2, 3])))
                else:
                    channels = 8
                    service("3CX-PRO", "Standard 3CX hébergé", 1, deck.id,
                            [(IdentifierKind.ACCOUNT_CODE, number), (IdentifierKind.NUMBER, main)])
                    dids = rng.randint(3, 12)
                service("DID", f"{dids} numéros SDA {main[:-2]}01-{dids:02d}", dids, None,
                        [(IdentifierKind.DID, f"{block}{n:02d}") for n in range(1, dids + 1)])
                if rng.random() < 0.85:
                    if channels >= 10:
                        service("FTTO-100", f"Fibre FTTO 100 Mb/s — {street}, {city}")
                    else:
                        service("FTTH-PRO", f"Fibre FTTH Pro — {street}, {city}")
                if extra.random() < data.YEARLY_SHARE:
                    service("MAINT-AN", "Maintenance annuelle du standard téléphonique")
                if extra.random() < data.ARREARS_SHARE:
                    service("SECOURS-4G", f"Lien 4G de secours — {street}, {city}")
                if end is None and start < p_start:   # showcase candidates: active the whole period
                    business.append((account, contract))
            else:
                line_zone = "9" if rng.random() < 0.6 else zone
                main = number_block(line_zone) + f"{rng.randint(0, 99):02d}"
                service("BOX-FIBRE", "Box fibre + ligne fixe", 1, deck.id,
                        [(IdentifierKind.ACCOUNT_CODE, number), (IdentifierKind.NUMBER, main)])
            if p_start <= start < p_end:
                installs.append((account, service("INSTALL", "Mise en service"), start))
            account.phone = main
            if i <= data.CUSTOMER_USERS:
                email = f"client-{number.lower()}@{data.CUSTOMER_DOMAIN}"
                s.add(User(email=email, name=account.name, password_hash=password_hash, role="customer",
                           account_id=account.id))
                users.append((email, "customer"))
        s.flush()
        showcase = _add_showcase(s, business[1:], products, p_start, actor)   # the first stays a plain one
        for account, svc, day in installs:
            s.add(OneOffCharge(account_id=account.id, service_id=svc.id, product_id=products["INSTALL"].id,
                               kind=ChargeKind.ONE_OFF.value, description=products["INSTALL"].name,
                               quantity=D(1), unit_price=products["INSTALL"].price, charge_date=day, created_by=actor))
        mandates = _add_mandates(s, extra, {b.id: b for b in brands}, p_start)
        summary = DemoSummary(
            period=period, seed=seed, brands=[b.name for b in brands], accounts=accounts,
            business_accounts=counts["business"], consumer_accounts=counts["consumer"],
            services=counts["services"], identifiers=counts["identifiers"], rates=len(deck.rates),
            bundles=counts["bundles"],
            activated_in_period=counts["activated"], terminated_in_period=counts["terminated"], users=users,
            mandates=mandates, showcase=showcase)
        record_audit(s, actor, DEMO_AUDIT_ACTION, "demo", None, **{k: v for k, v in summary.as_dict().items()
                                                                    if k not in ("users", "password")})
    add_schedule(wb, *data.MONTHLY_BILLING, actor=actor)
    if cdrs > 0:
        csv_path = wb.data_dir / "incoming" / "Master.csv"
        result = write_demo_cdrs(wb, csv_path, period, cdrs, seed)
        summary.csv_path, summary.cdrs_written, summary.malformed_lines = str(csv_path), result.cdrs, result.malformed
    return summary


def _add_showcase(s, candidates: list[tuple[Account, Contract]], products: dict[str, Product], p_start: dt.date,
                  actor: str) -> dict[str, str]:
    """Turn the given business accounts, in order, into the billing showcase: an intra-EU reverse-charge
    customer, an export customer, a welcome discount, a minimum commitment, a one-off charge."""
    eu, export = data.EU_CUSTOMER, data.EXPORT_CUSTOMER

    def foreign(account, _contract, customer, vat_number):
        for key in ("name", "country", "language", "address", "postcode", "city", "vat_regime"):
            setattr(account, key, customer[key])
        account.siren = account.siret = None
        account.vat_number = vat_number
        account.payment_method = PaymentMethod.TRANSFER.value

    def discount(account, _contract):
        kind, value, applies_to, description, months = data.WELCOME_DISCOUNT
        s.add(Discount(account_id=account.id, kind=kind, value=D(value), applies_to=applies_to,
                       description=description, valid_from=p_start, valid_to=_add_months(p_start, months)))

    def minimum(_account, contract):
        contract.minimum_monthly = D(data.MINIMUM_MONTHLY)

    def one_off(account, _contract):
        description, quantity, unit_price = data.SECOND_SITE
        s.add(OneOffCharge(account_id=account.id, product_id=products["INSTALL"].id, kind=ChargeKind.ONE_OFF.value,
                           description=description, quantity=D(quantity), unit_price=D(unit_price),
                           charge_date=p_start + dt.timedelta(days=9), created_by=actor))

    roles = [
        (f"intra-EU reverse charge ({eu['country']})",
         lambda a, c: foreign(a, c, eu, be_vat_number(eu["vat_stem"]))),
        (f"export ({export['country']})", lambda a, c: foreign(a, c, export, ch_uid(export["uid_stem"]))),
        ("10 % discount for 3 months", discount),
        (f"minimum {data.MINIMUM_MONTHLY}/month", minimum),
        ("one-off second-site installation", one_off),
    ]
    showcase = {}
    for (role, apply), (account, contract) in zip(roles, candidates):
        apply(account, contract)
        showcase[role] = account.number
    return showcase


def _add_mandates(s, rng: random.Random, brands: dict[int, Brand], p_start: dt.date) -> int:
    """A SEPA mandate for every account paying by direct debit, signed when its contract started;
    those signed more than a month before the period were collected last month (RCUR next)."""
    accounts = s.execute(select(Account.id, Account.number, Account.name, Account.brand_id, Contract.start_date)
                         .join(Contract, Contract.account_id == Account.id)
                         .where(Account.payment_method == PaymentMethod.SEPA_DEBIT.value)
                         .order_by(Account.number)).all()
    for account_id, number, name, brand_id, signed_on in accounts:
        bank, bic = rng.choice(data.BANKS)
        iban = fr_iban(bank, f"{rng.randint(0, 99_999):05d}", f"{rng.randint(0, 10 ** 11 - 1):011d}")
        collected = signed_on < _add_months(p_start, -1)
        s.add(SepaMandate(account_id=account_id, umr=f"{brands[brand_id].invoice_prefix}-{number}-01",
                          signed_on=signed_on, debtor_name=name, iban=iban.replace(" ", ""), bic=bic,
                          sequence_type=(SequenceType.RCUR if collected else SequenceType.FRST).value,
                          last_collected_on=_add_months(p_start, -1) + dt.timedelta(days=4) if collected else None))
    return len(accounts)


def demo_callers(session) -> list[CallerLine]:
    """Who places the demo's calls: every voice service with an account code, in account-code order."""
    rows = session.execute(
        select(Service, Product.code).join(Product, Product.id == Service.product_id)
        .where(Service.rate_deck_id.is_not(None)).options(selectinload(Service.identifiers))).all()
    callers = []
    for svc, code in rows:
        idents = {i.kind: i.value for i in svc.identifiers}
        if IdentifierKind.ACCOUNT_CODE.value not in idents:
            continue
        weight = {"SIP-CH": 2 * svc.quantity, "3CX-PRO": 8}.get(code, 1)
        callers.append(CallerLine(account_code=idents[IdentifierKind.ACCOUNT_CODE.value],
                                  number=idents.get(IdentifierKind.NUMBER.value, ""),
                                  trunk=idents.get(IdentifierKind.TRUNK.value, ""),
                                  weight=weight, extensions=code in ("SIP-CH", "3CX-PRO"),
                                  active_from=svc.activated_on, active_until=svc.terminated_on))
    return sorted(callers, key=lambda c: c.account_code)


def write_demo_cdrs(wb, path: Path, period: str, cdrs: int, seed: int, malformed: int = MALFORMED_LINES):
    with wb.db.session() as s:
        callers = demo_callers(s)
    return write_asterisk_master_csv(path, callers, period, cdrs, seed=seed, malformed=malformed)
