"""The block page's words, in Vietnamese (the default) and English.

One ``Texts`` per language, every field filled: a page is never half
translated. The texts are HTML written here (trusted: a Vietnamese name
inside the English page is marked ``lang="vi"`` for screen readers); the
values ``render`` puts into their placeholders (``{host}``, ``{operator}``,
``{hotline}``) are escaped. The hotline is the national
child-protection hotline (Tổng đài điện thoại quốc gia bảo vệ trẻ em), 111:
free of charge, day and night.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

HOTLINE: Final = "111"


@dataclass(frozen=True, slots=True)
class Texts:
    name: str
    """The language's own name, for the link that switches to it."""
    language_nav: str
    title: str
    heading: str
    lead: str
    lead_generic: str
    category: str
    blocked_by: str
    by_state: str
    by_operator: str
    by_profile: str
    your_operator: str
    help_heading: str
    help: str
    call: str
    review_heading: str
    review: str
    categories: dict[str, str]


VI: Final = Texts(
    name="Tiếng Việt",
    language_nav="Ngôn ngữ",
    title="Trang web bị chặn",
    heading="Trang web này đã bị chặn",
    lead="Mạng bạn đang dùng đã chặn truy cập tới {host}.",
    lead_generic="Trang bạn muốn mở đã bị chặn theo chính sách của mạng bạn đang dùng.",
    category="Danh mục",
    blocked_by="Căn cứ chặn",
    by_state="Yêu cầu của cơ quan nhà nước có thẩm quyền",
    by_operator="Chính sách của {operator}",
    by_profile="Chế độ lọc mà mạng của bạn đã chọn",
    your_operator="nhà mạng",
    help_heading="Cần giúp đỡ?",
    help=(
        "Nếu bạn hoặc một trẻ em bạn biết đang gặp nguy hiểm, bị bắt nạt hay bị xâm hại, "
        "hãy gọi Tổng đài quốc gia bảo vệ trẻ em. Cuộc gọi miễn phí, 24 giờ mỗi ngày."
    ),
    call="Gọi {hotline}",
    review_heading="Bạn cho rằng trang này bị chặn nhầm?",
    review="Hãy liên hệ {operator} để đề nghị xem xét lại.",
    categories={
        "adult": "Nội dung người lớn",
        "gambling": "Cờ bạc",
        "violence": "Bạo lực",
        "drugs": "Ma túy",
        "weapons": "Vũ khí",
        "dating": "Hẹn hò",
        "games": "Trò chơi trực tuyến",
        "social": "Mạng xã hội",
        "proxy": "Công cụ vượt bộ lọc (proxy, VPN)",
        "malware": "Phần mềm độc hại",
        "phishing": "Lừa đảo, giả mạo",
        "fraud": "Lừa đảo",
        "ads": "Quảng cáo",
        "tracking": "Theo dõi người dùng",
        "uncategorized": "Chưa phân loại",
    },
)

EN: Final = Texts(
    name="English",
    language_nav="Language",
    title="Website blocked",
    heading="This website is blocked",
    lead="The network you are using has blocked access to {host}.",
    lead_generic="The page you asked for is blocked by the policy of the network you are using.",
    category="Category",
    blocked_by="Blocked on the authority of",
    by_state="A requirement of the competent state authority",
    by_operator="The policy of {operator}",
    by_profile="The filtering profile your network chose",
    your_operator="your network operator",
    help_heading="Need help?",
    help=(
        "If you or a child you know is in danger, bullied or abused, call the national "
        'child protection hotline (<span lang="vi">Tổng đài quốc gia bảo vệ trẻ em</span>). '
        "The call is free, 24 hours a day."
    ),
    call="Call {hotline}",
    review_heading="Do you think this site is blocked by mistake?",
    review="Contact {operator} to ask for a review.",
    categories={
        "adult": "Adult content",
        "gambling": "Gambling",
        "violence": "Violence",
        "drugs": "Drugs",
        "weapons": "Weapons",
        "dating": "Dating",
        "games": "Online games",
        "social": "Social networks",
        "proxy": "Filter bypass (proxy, VPN)",
        "malware": "Malware",
        "phishing": "Phishing",
        "fraud": "Fraud",
        "ads": "Advertising",
        "tracking": "Tracking",
        "uncategorized": "Uncategorised",
    },
)

TEXTS: Final = {"vi": VI, "en": EN}
