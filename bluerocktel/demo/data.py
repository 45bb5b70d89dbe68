"""The fixed material of the demo operator: brands, catalog, sell rate deck, French places and names.

Prices are text, turned into Decimals by :func:`bluerocktel.money.D`; never floats.
"""

from __future__ import annotations

DEMO_PASSWORD = "demo-password-2026"
"""The password of every demo user (staff and customers). Demo data only: change it or drop the users."""

BLUEROCK_LOGO = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 280 48" role="img" aria-label="BlueRock Télécom">'
    '<path d="M6 40 L22 8 L38 40 Z" fill="#0b3d91"/><path d="M18 40 L30 18 L42 40 Z" fill="#3a7bd5"/>'
    '<text x="52" y="32" font-family="sans-serif" font-size="22" font-weight="700" fill="#0b3d91">'
    'BlueRock<tspan fill="#3a7bd5" font-weight="400"> Télécom</tspan></text></svg>'
)
AZUR_LOGO = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 235 48" role="img" aria-label="Azur Connect">'
    '<circle cx="24" cy="24" r="18" fill="#00a6a6"/><path d="M10 28 Q24 14 38 28" stroke="#ffd166" '
    'stroke-width="4" fill="none"/><text x="50" y="32" font-family="sans-serif" font-size="22" '
    'font-weight="700" fill="#006d77">Azur<tspan fill="#00a6a6"> Connect</tspan></text></svg>'
)

# SIRENs below pass the Luhn check; VAT numbers use the French key (12 + 3 * (SIREN % 97)) % 97.
# SIRET = SIREN + NIC (head office 0001 + Luhn digit); IBAN from the French bank details
# (bank, branch, account; RIB key and IBAN check digits computed); the SEPA creditor identifier
# (ICS) is FR + check digits + ZZZ + the national id; late_penalty_rate is annual.
BRANDS = [
    dict(code="BLUEROCK", name="BlueRock Télécom", host_names=["portal.bluerock.localhost", "localhost", "127.0.0.1"],
         primary_color="#0b3d91", accent_color="#3a7bd5", logo_svg=BLUEROCK_LOGO,
         legal_name="BlueRock Télécom SAS", siren_stem="81234567", legal_form="SAS",
         share_capital="150 000 EUR", address="12 rue de la Roquette", postcode="75011", city="Paris",
         rcs_city="Paris", ics_national_id="812345", late_penalty_rate="0.12",
         email="facturation@bluerock.localhost", phone="+33 1 84 60 12 00", bank=("30004", "00312", "34567890143"),
         bic="BNPAFRPPXXX", invoice_prefix="BRT",
         sections=["invoices", "calls", "services", "tickets"]),
    dict(code="AZUR", name="Azur Connect", host_names=["espace.azur.localhost"],
         primary_color="#006d77", accent_color="#ffd166", logo_svg=AZUR_LOGO,
         legal_name="Azur Connect SARL", siren_stem="90345678", legal_form="SARL",
         share_capital="20 000 EUR", address="4 avenue Jean Médecin", postcode="06000", city="Nice",
         rcs_city="Nice", ics_national_id="903456", late_penalty_rate="0.15",
         email="compta@azur.localhost", phone="+33 4 93 00 45 00", bank=("10107", "00111", "00234567890"),
         bic="BREDFRPPXXX", invoice_prefix="AZC",
         sections=["invoices", "calls", "services"]),
]
BRAND_WEIGHTS = [7, 3]   # share of accounts per brand

STAFF = [  # (role, e-mail local part, display name)
    ("admin", "demo-admin", "Camille Admin"),
    ("billing", "demo-billing", "Bastien Facturation"),
    ("support", "demo-support", "Sonia Support"),
    ("sales", "demo-sales", "Victor Commercial"),
    ("read_only", "demo-readonly", "Lucie Lecture"),
]
STAFF_DOMAIN = "bluerock.localhost"
CUSTOMER_USERS = 5          # the first N accounts get a portal user
CUSTOMER_DOMAIN = "client.localhost"

# code, name, kind, price excl. VAT per billing period (recurring) or per unit (one-off),
# billing period in months, billing timing (recurring products)
PRODUCTS = [
    ("SIP-CH", "Canal SIP trunk", "recurring", "9.90", 1, "advance"),
    ("DID", "Numéro SDA (DID)", "recurring", "1.00", 1, "advance"),
    ("3CX-PRO", "Licence 3CX Pro hébergée (8 appels simultanés)", "recurring", "39.00", 1, "advance"),
    ("FTTH-PRO", "Accès fibre FTTH Pro 1 Gb/s", "recurring", "49.90", 1, "advance"),
    ("FTTO-100", "Accès fibre FTTO 100 Mb/s garantis", "recurring", "290.00", 1, "advance"),
    ("BOX-FIBRE", "Box fibre et ligne fixe résidentielle", "recurring", "29.99", 1, "advance"),
    ("INSTALL", "Frais de mise en service", "one_off", "150.00", 1, "advance"),
    ("MAINT-AN", "Contrat de maintenance du standard (annuel)", "recurring", "480.00", 12, "advance"),
    ("SECOURS-4G", "Lien de secours 4G (facturé à terme échu)", "recurring", "19.90", 1, "arrears"),
]
YEARLY_SHARE = 0.06         # business accounts with the yearly maintenance contract
ARREARS_SHARE = 0.08        # business accounts with the 4G backup link, billed in arrears

# French banks of the customers' SEPA mandates: bank code, BIC
BANKS = [("30004", "BNPAFRPPXXX"), ("30003", "SOGEFRPPXXX"), ("30002", "CRLYFRPPXXX"),
         ("10278", "CMCIFR2AXXX"), ("20041", "PSSTFRPPXXX"), ("10107", "BREDFRPPXXX")]

# Showcase accounts: the business accounts active all period, after the first one, become in
# this order a Belgian company (intra-EU reverse charge), a Swiss one (export), a welcome discount
# (kind, value, applies to, text, months), a contract's net monthly minimum, a one-off charge
# (text, quantity, unit price).
EU_CUSTOMER = dict(name="Brouwerij Van Damme BV", country="BE", language="en", address="Kouter 12",
                   postcode="9000", city="Gent", vat_stem="04123456", vat_regime="eu_reverse_charge")
EXPORT_CUSTOMER = dict(name="Horlogerie du Léman SA", country="CH", language="fr", address="Rue du Rhône 40",
                       postcode="1204", city="Genève", uid_stem="10945678", vat_regime="export")
WELCOME_DISCOUNT = ("percent", "0.10", "all", "Remise de bienvenue 10 % pendant 3 mois", 3)
MINIMUM_MONTHLY = "250.00"
SECOND_SITE = ("Installation d'un second site (raccordement et configuration)", "1", "390.00")

# Dunning ladder of every brand: position, name, days after the due date, action, fee (excl. VAT)
DUNNING_STAGES = [
    (1, "Relance amiable", 7, "reminder", None),
    (2, "Relance avec frais", 15, "late_fee", "10.00"),
    (3, "Suspension des services", 30, "suspend", None),
]
# The billing schedule: name, cron (operator's time zone), job, parameters
MONTHLY_BILLING = ("monthly-billing", "0 6 1 * *", "billing_run", {"dry_run": True})

SELL_DECK = ("VOIX-STD", "Tarif voix standard France et international")

# prefix (E.164 digits), destination, zone, price per minute, connection fee, first/next increment (s)
RATES = [
    ("33", "France", "national_fixed", "0.0150", "0", 30, 6),
    ("331", "France fixe Île-de-France", "national_fixed", "0.0120", "0", 1, 1),
    ("332", "France fixe Nord-Ouest", "national_fixed", "0.0120", "0", 1, 1),
    ("333", "France fixe Nord-Est", "national_fixed", "0.0120", "0", 1, 1),
    ("334", "France fixe Sud-Est", "national_fixed", "0.0120", "0", 1, 1),
    ("335", "France fixe Sud-Ouest", "national_fixed", "0.0120", "0", 1, 1),
    ("339", "France fixe non géographique (box)", "national_fixed", "0.0120", "0", 1, 1),
    ("336", "France mobile", "national_mobile", "0.0390", "0", 30, 6),
    ("337", "France mobile", "national_mobile", "0.0390", "0", 30, 6),
    ("338", "France numéros spéciaux", "national_special", "0.0900", "0.0800", 30, 6),
    ("32", "Belgique", "europe_fixed", "0.0350", "0", 60, 60),
    ("324", "Belgique mobile", "europe_mobile", "0.1200", "0", 60, 60),
    ("49", "Allemagne", "europe_fixed", "0.0300", "0", 60, 60),
    ("4915", "Allemagne mobile", "europe_mobile", "0.1100", "0", 60, 60),
    ("4916", "Allemagne mobile", "europe_mobile", "0.1100", "0", 60, 60),
    ("4917", "Allemagne mobile", "europe_mobile", "0.1100", "0", 60, 60),
    ("34", "Espagne", "europe_fixed", "0.0300", "0", 60, 60),
    ("346", "Espagne mobile", "europe_mobile", "0.0950", "0", 60, 60),
    ("347", "Espagne mobile", "europe_mobile", "0.0950", "0", 60, 60),
    ("39", "Italie", "europe_fixed", "0.0320", "0", 60, 60),
    ("393", "Italie mobile", "europe_mobile", "0.1050", "0", 60, 60),
    ("351", "Portugal", "europe_fixed", "0.0350", "0", 60, 60),
    ("3519", "Portugal mobile", "europe_mobile", "0.1100", "0", 60, 60),
    ("352", "Luxembourg", "europe_fixed", "0.0400", "0", 60, 60),
    ("41", "Suisse", "europe_fixed", "0.0450", "0.0500", 60, 60),
    ("417", "Suisse mobile", "europe_mobile", "0.2400", "0.0500", 60, 60),
    ("44", "Royaume-Uni", "uk", "0.0300", "0", 60, 60),
    ("447", "Royaume-Uni mobile", "uk_mobile", "0.0900", "0", 60, 60),
    ("1", "États-Unis / Canada", "north_america", "0.0250", "0", 60, 60),
    ("212", "Maroc", "maghreb", "0.2400", "0.1000", 60, 60),
    ("2126", "Maroc mobile", "maghreb_mobile", "0.4500", "0.1000", 60, 60),
    ("2127", "Maroc mobile", "maghreb_mobile", "0.4500", "0.1000", 60, 60),
    ("213", "Algérie", "maghreb", "0.2200", "0.1000", 60, 60),
    ("2135", "Algérie mobile", "maghreb_mobile", "0.5200", "0.1000", 60, 60),
    ("2136", "Algérie mobile", "maghreb_mobile", "0.5200", "0.1000", 60, 60),
    ("2137", "Algérie mobile", "maghreb_mobile", "0.5200", "0.1000", 60, 60),
    ("216", "Tunisie", "maghreb", "0.2600", "0.1000", 60, 60),
    ("2162", "Tunisie mobile", "maghreb_mobile", "0.4800", "0.1000", 60, 60),
    ("2165", "Tunisie mobile", "maghreb_mobile", "0.4800", "0.1000", 60, 60),
    ("2169", "Tunisie mobile", "maghreb_mobile", "0.4800", "0.1000", 60, 60),
]

# Evenings, nights, weekends and French public holidays are off-peak for international calls:
# (band, days, start minute, end minute, priority); the deck's holiday calendar is FR.
SELL_BANDS = [
    ("offpeak", "mon,tue,wed,thu,fri", 0, 8 * 60, 1),
    ("offpeak", "mon,tue,wed,thu,fri", 19 * 60, 24 * 60, 1),
    ("offpeak", "sat,sun,hol", 0, 24 * 60, 2),
]
OFFPEAK_ZONES = {"europe_fixed", "europe_mobile", "uk", "uk_mobile", "north_america", "maghreb", "maghreb_mobile"}
OFFPEAK_FACTOR = "0.8"          # off-peak price = peak price x 0.8 (rounded half-up at 4 decimals)

# The wholesale carrier every call leaves through (Asterisk dstchannel PJSIP/operator-out-…):
# what each destination costs us, per minute, 1/1 increments. Moroccan mobiles cost more than we
# sell them for (termination rates went up): those calls are flagged with a negative margin.
BUY_DECK = ("OPE-WHOLESALE", "Opérateur de transit — tarif d'achat")
CARRIER_TRUNK = ("Opérateur de transit", "PJSIP/operator-out")
BUY_PRICE_SHARE = "0.6"         # cost = sell price x 0.6 (half-up, 4 decimals) ...
BUY_OVERRIDES = {"2126": "0.4700", "2127": "0.4700"}   # ... except these

# Bundles: (code, name, call type, zones, allowance in seconds or None, fair-use cap in seconds)
BUNDLES = [
    ("MOB-1000", "1 000 minutes vers les mobiles français", "voice", ["national_mobile"], 1000 * 60, None),
    ("FIXE-ILLIMITE", "Appels illimités vers les fixes français (usage raisonnable 10 000 min)", "voice",
     ["national_fixed"], None, 10_000 * 60),
]
BUNDLE_FOR_PRODUCT = {"SIP-CH": "MOB-1000", "3CX-PRO": "MOB-1000", "BOX-FIBRE": "FIXE-ILLIMITE"}
SIP_BUNDLE_MIN_CHANNELS = 10    # SIP trunks get MOB-1000 from this many channels up

# city, postcode, French geographic zone digit (01 Paris … 05 South-West)
CITIES = [
    ("Paris", "75008", "1"), ("Paris", "75011", "1"), ("Paris", "75015", "1"), ("Boulogne-Billancourt", "92100", "1"),
    ("Nanterre", "92000", "1"), ("Saint-Denis", "93200", "1"), ("Versailles", "78000", "1"),
    ("Rennes", "35000", "2"), ("Nantes", "44000", "2"), ("Rouen", "76000", "2"), ("Caen", "14000", "2"),
    ("Tours", "37000", "2"), ("Lille", "59000", "3"), ("Strasbourg", "67000", "3"), ("Reims", "51100", "3"),
    ("Metz", "57000", "3"), ("Dijon", "21000", "3"), ("Lyon", "69003", "4"), ("Lyon", "69007", "4"),
    ("Marseille", "13008", "4"), ("Nice", "06000", "4"), ("Grenoble", "38000", "4"), ("Montpellier", "34000", "4"),
    ("Toulon", "83000", "4"), ("Bordeaux", "33000", "5"), ("Toulouse", "31000", "5"), ("Limoges", "87000", "5"),
    ("Pau", "64000", "5"), ("La Rochelle", "17000", "5"),
]
STREETS = ["rue de la République", "avenue Jean Jaurès", "boulevard Victor Hugo", "rue Pasteur", "place de la Mairie",
           "rue du Général de Gaulle", "avenue de la Gare", "rue des Écoles", "quai des Chartrons", "rue Nationale",
           "allée des Tilleuls", "chemin des Vignes", "rue de Verdun", "avenue Foch", "rue Gambetta"]
FIRST_NAMES = ["Marie", "Jean", "Camille", "Nicolas", "Julie", "Thomas", "Léa", "Pierre", "Sophie", "Antoine",
               "Chloé", "Hugo", "Manon", "Lucas", "Emma", "Louis", "Inès", "Mathieu", "Sarah", "Karim",
               "Nadia", "Yanis", "Élodie", "François", "Amina"]
LAST_NAMES = ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau",
              "Simon", "Laurent", "Lefebvre", "Michel", "Garcia", "David", "Bertrand", "Roux", "Vincent", "Fournier",
              "Benali", "Haddad", "Nguyen", "Lopez", "Girard"]
COMPANY_STEMS = ["Atelier", "Cabinet", "Boulangerie", "Garage", "Pharmacie", "Transports", "Menuiserie", "Clinique",
                 "Agence", "Imprimerie", "Hôtel", "Restaurant", "Bureau d'études", "Plomberie", "Librairie",
                 "Laboratoire", "Studio", "Conseil", "Logistique", "Optique"]
COMPANY_SUFFIXES = ["SARL", "SAS", "SASU", "EURL", "SA", "SCOP"]
