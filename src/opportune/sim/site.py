"""The demo website as the simulator sees it: one table of its paths, and what is on them.

The pages are the templates of ``src/opportune/web/demo/templates/``, served under
``/demo/``. Everything the simulator writes into a URL, a title, a search box or a
User-Agent header comes from here.
"""

from __future__ import annotations

from typing import Final

from opportune.sim import personas as P

# ---- the demo site: every path the simulator visits (web/demo/templates/) -----------
PAGES: Final[dict[int, tuple[str, str]]] = {
    P.HOME: ("/demo/index.html", "Banking that fits your plans · Opportune Bank"),
    P.PRODUCT: ("/demo/product.html", "Flex personal loan · Opportune Bank"),
    P.APPLY1: ("/demo/apply.html", "Apply for a personal loan · Opportune Bank"),
    P.APPLY2: ("/demo/apply.html", "Apply for a personal loan · Opportune Bank"),
    P.APPLY3: ("/demo/apply.html", "Apply for a personal loan · Opportune Bank"),
    P.CONFIRMATION: ("/demo/confirmation.html", "Application received · Opportune Bank"),
    P.HELP: ("/demo/help.html", "Help centre · Opportune Bank"),
    P.SEARCH: ("/demo/search.html", "Search · Opportune Bank"),
    P.LOGIN: ("/demo/login.html", "Sign in · Opportune Bank"),
    P.ACCOUNT: ("/demo/account.html", "Your accounts · Opportune Bank"),
}
HELP_ARTICLES: Final = {
    "start": "Getting started",
    "device": "Device activation",
    "eligibility": "Loan eligibility",
    "repayment": "Early repayment",
    "privacy": "Privacy and cookies",
}
VIEWPORTS: Final = {P.HOME: "home-rates", P.PRODUCT: "loan-rates", P.HELP: "help-article"}
# In-page things each intent tends to click (a quarter of the time: anyone's), named as the
# snippet names them (data-opportune-click or the link text). Evidence of intent, with noise.
INTEREST: Final = {
    P.BROWSER: ("Everyday saver", "Travel card", "See loan rates", "Cookie preferences"),
    P.BUYER: ("Travel card", "Everyday saver", "Find out more →", "Compare cards"),
    P.APPLICANT: ("Am I eligible?", "Apply now", "Rates and calculator →", "Loan eligibility"),
    P.QUOTE_SEEKER: ("Rates and calculator →", "See loan rates", "Early repayment", "Amount"),
    P.QUOTED: ("Am I eligible?", "Apply now", "Early repayment"),
    P.DEMO_BOOKER: ("Talk to an adviser", "Business banking", "Opening hours"),
    P.SUP_DEVICE: ("Set up your device", "Device activation", "Read the guide →"),
    P.SUP_TRAVEL: ("Travel card", "Card settings", "Still stuck? Contact us"),
    P.SUP_RETURNS: ("Disputes and refunds", "Still stuck? Contact us", "Card settings"),
    P.DONE: ("Back to home", "Sign in to follow it"),
}
ALL_INTEREST: Final = tuple(x for xs in INTEREST.values() for x in xs)
RAGE_TARGETS: Final = {
    P.HOME: "Hero: apply for a loan",
    P.PRODUCT: "Apply now",
    P.APPLY1: "Continue",
    P.APPLY2: "Continue",
    P.APPLY3: "Submit application",
    P.CONFIRMATION: "Sign in to follow it",
    P.HELP: "Still stuck? Contact us",
    P.SEARCH: "Search",
    P.LOGIN: "Sign in",
    P.ACCOUNT: "Sign out",
}
FORM_FIELDS: Final = (
    (
        ("amount", "Enter an amount between €1,000 and €50,000"),
        ("term", "Choose a term"),
        ("purpose", "Tell us what the loan is for"),
    ),
    (
        ("firstName", "Enter your first name"),
        ("email", "Enter an email like name@example.com"),
        ("income", "Enter your income in euros"),
        ("employment", "Choose your employment"),
    ),
    (("agree", None),),
)
# What each intent searches for and reads; other intents' words come in as noise.
QUERIES: Final = {
    P.BROWSER: ("savings", "card", "interest rates", "mortgage", "opening hours"),
    P.BUYER: ("travel card", "savings account", "premium card", "card"),
    P.APPLICANT: ("personal loan", "loan", "loan eligibility", "apply loan"),
    P.QUOTE_SEEKER: ("loan rates", "loan calculator", "loan", "monthly payment"),
    P.QUOTED: ("loan eligibility", "early repayment", "apply loan"),
    P.DEMO_BOOKER: ("adviser", "business account", "book a call", "talk to someone"),
    P.SUP_DEVICE: ("device activation", "activate new phone", "activation code", "new phone"),
    P.SUP_TRAVEL: ("travel alert", "travel notice", "card abroad", "travel"),
    P.SUP_RETURNS: ("returns", "refund", "return a payment", "chargeback"),
    P.DONE: ("loan", "card", "savings"),
}
ARTICLES: Final = {
    P.BROWSER: ("start", "privacy", "repayment"),
    P.BUYER: ("start", "privacy"),
    P.APPLICANT: ("eligibility", "eligibility", "repayment"),
    P.QUOTE_SEEKER: ("repayment", "eligibility"),
    P.QUOTED: ("eligibility", "repayment"),
    P.DEMO_BOOKER: ("start", "repayment"),
    P.SUP_DEVICE: ("device", "device", "start"),
    P.SUP_TRAVEL: ("start", "privacy"),
    P.SUP_RETURNS: ("repayment", "start"),
    P.DONE: ("start",),
}
ALL_QUERIES: Final = tuple(q for qs in QUERIES.values() for q in qs)

USER_AGENTS: Final = {
    "desktop": (
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Safari/537.36",
            1920,
            1080,
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
            "Gecko) Version/18.1 Safari/605.1.15",
            1512,
            982,
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
            1366,
            768,
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
            1536,
            864,
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Safari/537.36",
            2560,
            1440,
        ),
    ),
    "mobile": (
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
            "like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
            390,
            844,
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Mobile Safari/537.36",
            412,
            915,
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) "
            "SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
            384,
            832,
        ),
    ),
    "tablet": (
        (
            "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
            "Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
            820,
            1180,
        ),
        (
            "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Safari/537.36",
            800,
            1280,
        ),
    ),
}
TZ_OFFSET_H: Final = {
    "Europe/Dublin": 0,
    "Europe/London": 0,
    "Europe/Madrid": 1,
    "Europe/Berlin": 1,
    "Europe/Paris": 1,
    "America/New_York": -5,
    "America/Sao_Paulo": -3,
}
# Relative arrivals per local hour (0..23): quiet nights, a lunch bump, a busy evening.
DIURNAL: Final = (
    0.15,
    0.08,
    0.05,
    0.04,
    0.05,
    0.1,
    0.3,
    0.6,
    0.85,
    1.0,
    1.0,
    1.0,
    1.05,
    1.0,
    0.95,
    0.9,
    0.9,
    0.95,
    1.0,
    1.05,
    1.0,
    0.8,
    0.5,
    0.3,
)
ORGANIC: Final = (
    "https://www.google.com/",
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://duckduckgo.com/",
)
SOCIAL: Final = (
    ("facebook", "https://www.facebook.com/"),
    ("instagram", "https://l.instagram.com/"),
    ("linkedin", "https://www.linkedin.com/"),
)
REFERRALS: Final = ("https://www.comparethebank.example/loans", "https://forum.money.example/t/42")
FIRST_NAMES: Final = (
    "ana",
    "liam",
    "sofia",
    "noah",
    "emma",
    "lukas",
    "chloe",
    "mateo",
    "aoife",
    "jack",
    "lea",
    "hugo",
    "maria",
    "ben",
    "olivia",
    "diego",
)
