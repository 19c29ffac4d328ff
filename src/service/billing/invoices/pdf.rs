//! The invoice as a PDF (pdf-writer, base-14 Helvetica, A4): header facts, a table of
//! lines that continues over as many pages as needed, and the totals. Amounts are the
//! stored decimal strings; nothing is computed in floating point except positions.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use crate::{
    domain::{
        billing::InvoiceStatus,
        clock::from_micros,
        money::{Currency, Money},
    },
    storage::entities::{invoice_lines, invoices, organizations},
};

use super::text::{encode, truncate, width, wrap};

const PAGE_WIDTH: f32 = 595.0;
const PAGE_HEIGHT: f32 = 842.0;
const LEFT: f32 = 50.0;
const RIGHT: f32 = 545.0;
const TOP: f32 = 790.0;
const BOTTOM: f32 = 60.0;
const SIZE: f32 = 9.0;
const LEADING: f32 = 13.0;
const VALUE_X: f32 = 150.0;
const QTY_RIGHT: f32 = 360.0;
const UNIT_RIGHT: f32 = 450.0;
const DESCRIPTION_WIDTH: f32 = 245.0;
const TOTALS_X: f32 = 330.0;
const REGULAR: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");

/// Pages being laid out top to bottom.
struct Layout {
    pages: Vec<Content>,
    y: f32,
}

impl Layout {
    fn new() -> Layout {
        Layout {
            pages: vec![Content::new()],
            y: TOP,
        }
    }

    fn page(&mut self) -> &mut Content {
        if self.pages.is_empty() {
            self.pages.push(Content::new());
        }
        let last = self.pages.len() - 1;
        &mut self.pages[last]
    }

    /// Writes encoded text with its left edge at `x` on the current line.
    fn text(&mut self, x: f32, text: &[u8], size: f32, bold: bool) {
        let y = self.y;
        let page = self.page();
        page.begin_text();
        page.set_font(if bold { BOLD } else { REGULAR }, size);
        page.next_line(x, y);
        page.show(Str(text));
        page.end_text();
    }

    /// Writes encoded text with its right edge at `right`.
    fn text_right(&mut self, right: f32, text: &[u8], size: f32, bold: bool) {
        self.text(right - width(text, size, bold), text, size, bold);
    }

    fn rule(&mut self) {
        let y = self.y;
        let page = self.page();
        page.set_line_width(0.5);
        page.move_to(LEFT, y);
        page.line_to(RIGHT, y);
        page.stroke();
    }

    /// Starts a new page when fewer than `height` points are left on this one.
    fn room(&mut self, height: f32) -> bool {
        if self.y - height >= BOTTOM {
            return false;
        }
        self.pages.push(Content::new());
        self.y = TOP;
        true
    }

    /// A label and a value on one line of the facts block.
    fn fact(&mut self, label: &str, value: &str) {
        self.text(LEFT, &encode(label), SIZE, true);
        let value = truncate(&encode(value), RIGHT - VALUE_X, SIZE, false);
        self.text(VALUE_X, &value, SIZE, false);
        self.y -= LEADING;
    }

    fn table_header(&mut self, currency: Currency) {
        self.text(LEFT, b"Description", SIZE, true);
        self.text_right(QTY_RIGHT, b"Qty", SIZE, true);
        self.text_right(UNIT_RIGHT, b"Unit price", SIZE, true);
        self.text_right(RIGHT, &encode(&format!("Amount ({currency})")), SIZE, true);
        self.y -= 5.0;
        self.rule();
        self.y -= LEADING;
    }
}

fn date(micros: i64) -> String {
    from_micros(micros).format("%Y-%m-%d").to_string()
}

/// Renders an invoice with its lines for `org`.
pub fn render(
    org: &organizations::Model,
    invoice: &invoices::Model,
    lines: &[invoice_lines::Model],
) -> Vec<u8> {
    let currency = invoice.currency.parse().unwrap_or(Currency::Usd);
    let money = |m| Money::from_micros(currency, m).amount_string();
    let status = invoice.status.parse().unwrap_or(InvoiceStatus::Open);
    let mut layout = Layout::new();
    layout.text(LEFT, b"INVOICE", 22.0, true);
    layout.text_right(RIGHT, &encode(&invoice.number), 14.0, true);
    layout.y -= 40.0;
    layout.fact("Billed to", &org.name);
    layout.fact("Invoice number", &invoice.number);
    layout.fact("Status", status.as_str());
    if let Some(at) = invoice.issue_time {
        layout.fact("Issue date", &date(at));
    }
    if let Some(at) = invoice.due_time {
        layout.fact("Due date", &date(at));
    }
    layout.fact(
        "Period",
        &format!(
            "{} – {}",
            date(invoice.period_start),
            date(invoice.period_end)
        ),
    );
    match (status, invoice.paid_time, invoice.void_time) {
        (InvoiceStatus::Paid, Some(at), _) => layout.fact("Paid on", &date(at)),
        (InvoiceStatus::Void, _, Some(at)) => layout.fact("Voided on", &date(at)),
        (InvoiceStatus::Uncollectible, _, Some(at)) => {
            layout.fact("Uncollectible since", &date(at))
        }
        _ => {}
    }
    layout.fact("Currency", currency.code());
    if !invoice.memo.is_empty() {
        layout.text(LEFT, b"Memo", SIZE, true);
        for line in wrap(&encode(&invoice.memo), RIGHT - VALUE_X, SIZE, false) {
            layout.room(LEADING);
            layout.text(VALUE_X, &line, SIZE, false);
            layout.y -= LEADING;
        }
    }
    layout.y -= 2.0 * LEADING;
    layout.room(3.0 * LEADING);
    layout.table_header(currency);
    for line in lines {
        let description = wrap(&encode(&line.description), DESCRIPTION_WIDTH, SIZE, false);
        let height = description.len() as f32 * LEADING;
        if layout.room(height.min(TOP - BOTTOM - 2.0 * LEADING)) {
            layout.table_header(currency);
        }
        layout.text_right(QTY_RIGHT, line.quantity.to_string().as_bytes(), SIZE, false);
        layout.text_right(
            UNIT_RIGHT,
            money(line.unit_amount_micros).as_bytes(),
            SIZE,
            false,
        );
        layout.text_right(RIGHT, money(line.amount_micros).as_bytes(), SIZE, false);
        for (i, part) in description.iter().enumerate() {
            if i > 0 && layout.room(LEADING) {
                layout.table_header(currency);
            }
            layout.text(LEFT, part, SIZE, false);
            layout.y -= LEADING;
        }
    }
    // The closing rule sits under the last row, unless the totals start a new page.
    if !layout.room(6.0 * LEADING) {
        layout.y += LEADING - 5.0;
        layout.rule();
    }
    layout.y -= LEADING + 4.0;
    let due = invoice.total_micros - invoice.amount_paid_micros;
    for (label, amount, bold) in [
        ("Subtotal", invoice.subtotal_micros, false),
        ("Total", invoice.total_micros, true),
        ("Amount paid", invoice.amount_paid_micros, false),
        ("Amount due", due, true),
    ] {
        layout.text(TOTALS_X, label.as_bytes(), SIZE, bold);
        let value = format!("{} {}", money(amount), currency.code());
        layout.text_right(RIGHT, value.as_bytes(), SIZE, bold);
        layout.y -= LEADING;
    }
    if !invoice.status_reason.is_empty() {
        layout.y -= LEADING;
        let note = format!("{}: {}", status.as_str(), invoice.status_reason);
        for line in wrap(&encode(&note), RIGHT - LEFT, SIZE, false) {
            layout.room(LEADING);
            layout.text(LEFT, &line, SIZE, false);
            layout.y -= LEADING;
        }
    }
    finish(layout.pages, &invoice.number)
}

/// Writes the pages (with a numbered footer) into a PDF document.
fn finish(pages: Vec<Content>, number: &str) -> Vec<u8> {
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let regular = Ref::new(3);
    let bold = Ref::new(4);
    let info = Ref::new(5);
    let count = pages.len();
    let page_refs: Vec<(Ref, Ref)> = (0..count)
        .map(|i| {
            let base = 6 + 2 * i32::try_from(i).unwrap_or(0);
            (Ref::new(base), Ref::new(base + 1))
        })
        .collect();
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(page_refs.iter().map(|(page, _)| *page))
        .count(i32::try_from(count).unwrap_or(i32::MAX));
    for (font, name) in [(regular, "Helvetica"), (bold, "Helvetica-Bold")] {
        pdf.type1_font(font)
            .base_font(Name(name.as_bytes()))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    pdf.document_info(info)
        .title(TextStr(&format!("Invoice {number}")))
        .producer(TextStr("tenantry"));
    for (i, (mut content, (page_ref, content_ref))) in
        pages.into_iter().zip(page_refs.iter().copied()).enumerate()
    {
        let footer = encode(&format!("{number} · page {} of {count}", i + 1));
        content.begin_text();
        content.set_font(REGULAR, 8.0);
        content.next_line(LEFT, 30.0);
        content.show(Str(&footer));
        content.end_text();
        let mut page = pdf.page(page_ref);
        page.media_box(Rect::new(0.0, 0.0, PAGE_WIDTH, PAGE_HEIGHT))
            .parent(tree)
            .contents(content_ref);
        let mut resources = page.resources();
        resources.fonts().pair(REGULAR, regular).pair(BOLD, bold);
        resources.finish();
        page.finish();
        pdf.stream(content_ref, &content.finish());
    }
    pdf.finish()
}
