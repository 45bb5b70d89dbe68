"""The branded page frame shared by the portal and the staff app: header, cards, styles."""

from __future__ import annotations

import html

import panel as pn

from bluerocktel.web.branding import BrandView

EXTENSIONS = ("tabulator",)


def load_extensions() -> None:
    """List Panel's extensions explicitly in every session (DESIGN.md §4: else pages stay blank)."""
    pn.extension(*EXTENSIONS, notifications=False)


def header(brand: BrandView, subtitle: str, user_label: str) -> pn.pane.HTML:
    e = html.escape
    logo = (f'<img src="{e(brand.logo_data_uri)}" alt="" style="height:40px;width:40px;object-fit:contain;'
            f'background:#fff;border-radius:8px;padding:3px">' if brand.logo_data_uri else
            f'<div style="height:40px;width:40px;border-radius:8px;background:#fff;color:{brand.primary_color};'
            f'display:flex;align-items:center;justify-content:center;font-weight:700;font-size:20px">'
            f'{e(brand.name[:1].upper())}</div>')
    return pn.pane.HTML(f"""
<header class="brt-header" data-brand="{e(brand.code)}" style="display:flex;align-items:center;gap:14px;
  background:{brand.primary_color};color:#fff;padding:14px 28px;border-bottom:4px solid {brand.accent_color};
  font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif">
  {logo}
  <div style="flex:1">
    <div class="brt-brand-name" style="font-size:20px;font-weight:700">{e(brand.name)}</div>
    <div style="font-size:13px;opacity:.85">{e(subtitle)}</div>
  </div>
  <div style="font-size:13px;opacity:.9;margin-right:10px">{e(user_label)}</div>
  <form method="post" action="/logout" style="margin:0">
    <button type="submit" style="background:transparent;color:#fff;border:1px solid rgba(255,255,255,.7);
      border-radius:6px;padding:6px 14px;cursor:pointer;font-size:13px">Sign out</button>
  </form>
</header>""", sizing_mode="stretch_width", margin=0)


def card(title: str, value: str, note: str = "", accent: str = "#0b3d91") -> pn.pane.HTML:
    e = html.escape
    return pn.pane.HTML(f"""
<div style="background:#fff;border-radius:8px;padding:14px 18px;border-left:4px solid {accent};
  box-shadow:0 1px 3px rgba(15,23,42,.08);font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;
  min-width:200px">
  <div style="font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#5b6472">{e(title)}</div>
  <div style="font-size:22px;font-weight:700;margin-top:4px;color:#1d2430">{e(value)}</div>
  <div style="font-size:12px;color:#8a93a3;margin-top:2px">{e(note)}</div>
</div>""", margin=(10, 10))


def section_title(text: str) -> pn.pane.HTML:
    return pn.pane.HTML(f'<h3 style="margin:6px 0;font-family:system-ui,sans-serif;color:#1d2430">'
                        f'{html.escape(text)}</h3>', margin=(4, 10))


def lazy_tabs(builders) -> pn.Tabs:
    """Tabs whose content is built by its builder the first time the tab is shown."""
    holders = [pn.Column(sizing_mode="stretch_width") for _ in builders]
    tabs = pn.Tabs(*[(title, holder) for (title, _), holder in zip(builders, holders)], margin=(0, 28),
                   sizing_mode="stretch_width", dynamic=True)

    def fill(index: int) -> None:
        if 0 <= index < len(holders) and not holders[index].objects:
            holders[index].objects = [builders[index][1]()]

    fill(0)
    tabs.param.watch(lambda event: fill(event.new), "active")
    return tabs
