//! ListPlans, GetPlan and ListAddonServices: the catalogue of
//! `settings.billing.catalogue`, held in memory. Plans are readable without
//! authentication; the add-on list needs any credentials.
//!
//! Pages over the in-memory catalogue use the same opaque tokens as database lists: the
//! last item's sort key and id, bound to the query's fingerprint.

use std::cmp::Ordering;

use crate::{
    auth::Caller,
    domain::{
        filter::{self, Op},
        money::Currency,
        paging::{self, Cursor},
        plans::{Addon, ChargeType, key_problem},
    },
    error::{Error, Result, Violations},
    grpc::Ctx,
    proto,
};

use super::{addons::addon_proto, plan_proto};

const BAD_TOKEN: &str = "is not a page token issued by this service";

/// Page size and the position after which the page starts, from a request.
struct CataloguePage {
    size: usize,
    after: Option<Cursor>,
    fingerprint: String,
}

impl CataloguePage {
    fn parse(v: &mut Violations, page_size: i32, page_token: &str, query: &[&str]) -> Self {
        let size = v
            .check("page_size", paging::page_size(page_size))
            .unwrap_or(paging::DEFAULT_PAGE_SIZE);
        let fingerprint = paging::fingerprint(query);
        let after = v
            .check("page_token", paging::decode(page_token, &fingerprint))
            .flatten();
        if after.as_ref().is_some_and(|c| c.k.is_none()) {
            v.add("page_token", BAD_TOKEN);
        }
        CataloguePage {
            size: usize::try_from(size).unwrap_or(usize::MAX),
            after,
            fingerprint,
        }
    }

    /// Cuts `items` (already past the cursor) to the page; returns the next token, which
    /// carries the last item's sort key and id given by `position`.
    fn finish<T>(&self, items: &mut Vec<T>, position: impl Fn(&T) -> (String, String)) -> String {
        let more = items.len() > self.size;
        items.truncate(self.size);
        match items.last() {
            Some(last) if more => {
                let (key, id) = position(last);
                paging::encode(&Cursor {
                    q: self.fingerprint.clone(),
                    k: Some(key),
                    id,
                })
            }
            _ => String::new(),
        }
    }
}

/// ListPlans: the plans by ascending tier rank; with `currency`, only the plans priced
/// in it, each with only that currency's prices.
pub async fn list_plans(
    ctx: Ctx,
    _caller: Caller,
    req: proto::ListPlansRequest,
) -> Result<proto::ListPlansResponse> {
    let mut v = Violations::new();
    let currency = if req.currency.is_empty() {
        None
    } else {
        v.check("currency", req.currency.parse::<Currency>())
    };
    let page = CataloguePage::parse(
        &mut v,
        req.page_size,
        &req.page_token,
        &["plans", &req.currency],
    );
    // The rank of the last plan shown; a token whose key is not a rank is not ours.
    let after_rank = match page.after.as_ref().and_then(|c| c.k.as_deref()) {
        Some(k) => match k.parse::<i32>() {
            Ok(rank) => Some(rank),
            Err(_) => {
                v.add("page_token", BAD_TOKEN);
                None
            }
        },
        None => None,
    };
    v.finish()?;
    let catalogue = &ctx.settings.billing.catalogue;
    let mut plans: Vec<_> = catalogue
        .plans
        .iter()
        .filter(|plan| currency.is_none_or(|c| plan.priced_in(c)))
        .filter(|plan| after_rank.is_none_or(|rank| plan.tier_rank > rank))
        .collect();
    let next_page_token = page.finish(&mut plans, |plan| {
        (plan.tier_rank.to_string(), plan.id.clone())
    });
    Ok(proto::ListPlansResponse {
        plans: plans
            .into_iter()
            .map(|plan| plan_proto(plan, currency))
            .collect(),
        next_page_token,
    })
}

/// GetPlan: one plan with all its prices.
pub async fn get_plan(
    ctx: Ctx,
    _caller: Caller,
    req: proto::GetPlanRequest,
) -> Result<proto::GetPlanResponse> {
    if let Some(problem) = key_problem(&req.plan_id) {
        return Err(Error::invalid("plan_id", problem));
    }
    let plan = ctx
        .settings
        .billing
        .catalogue
        .plan(&req.plan_id)
        .ok_or_else(|| Error::not_found("plan", &req.plan_id))?;
    Ok(proto::GetPlanResponse {
        plan: Some(plan_proto(plan, None)),
    })
}

const ADDON_FILTER_FIELDS: &[(&str, &[Op])] = &[
    ("category", filter::EQUALITY),
    ("charge_type", filter::EQUALITY),
    ("requires_agreement", filter::EQUALITY),
];

/// A parsed filter term over add-ons.
enum AddonTerm {
    Category(String),
    ChargeType(ChargeType),
    RequiresAgreement(bool),
}

impl AddonTerm {
    fn parse(v: &mut Violations, term: &filter::Term) -> Option<(AddonTerm, bool)> {
        let value = term.value.as_str();
        let parsed = match term.field.as_str() {
            "category" => Some(AddonTerm::Category(value.to_owned())),
            "charge_type" => {
                let bare = value.strip_prefix("ADDON_CHARGE_TYPE_").unwrap_or(value);
                match bare.to_ascii_uppercase().parse::<ChargeType>() {
                    Ok(charge) => Some(AddonTerm::ChargeType(charge)),
                    Err(_) => {
                        v.add("filter", "charge_type must be ONE_TIME or MONTHLY");
                        None
                    }
                }
            }
            _ => match value {
                "true" => Some(AddonTerm::RequiresAgreement(true)),
                "false" => Some(AddonTerm::RequiresAgreement(false)),
                _ => {
                    v.add("filter", "requires_agreement must be true or false");
                    None
                }
            },
        };
        parsed.map(|t| (t, term.op == Op::Eq))
    }

    fn holds(&self, addon: &Addon) -> bool {
        match self {
            AddonTerm::Category(category) => addon.category == *category,
            AddonTerm::ChargeType(charge) => addon.charge_type == *charge,
            AddonTerm::RequiresAgreement(required) => addon.terms.is_some() == *required,
        }
    }
}

/// The sort key of the add-on list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddonOrder {
    Name,
    Category,
}

impl AddonOrder {
    fn key(self, addon: &Addon) -> &str {
        match self {
            AddonOrder::Name => &addon.name,
            AddonOrder::Category => &addon.category,
        }
    }
}

/// ListAddonServices: the add-on catalogue, optionally one category, filtered, ordered
/// by name (default) or category (ties by id), paged.
pub async fn list_addon_services(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListAddonServicesRequest,
) -> Result<proto::ListAddonServicesResponse> {
    caller.principal()?;
    let mut v = Violations::new();
    if !req.category.is_empty()
        && let Some(problem) = key_problem(&req.category)
    {
        v.add("category", problem);
    }
    let terms = v
        .check("filter", filter::parse(&req.filter, ADDON_FILTER_FIELDS))
        .unwrap_or_default();
    let terms: Vec<(AddonTerm, bool)> = terms
        .iter()
        .filter_map(|term| AddonTerm::parse(&mut v, term))
        .collect();
    let (order, descending) = crate::service::paging::parse_order(
        &mut v,
        &req.order_by,
        &[
            ("name", AddonOrder::Name),
            ("category", AddonOrder::Category),
        ],
        (AddonOrder::Name, false),
    );
    let page = CataloguePage::parse(
        &mut v,
        req.page_size,
        &req.page_token,
        &["addons", &req.category, &req.filter, &req.order_by],
    );
    v.finish()?;
    let position = |addon: &Addon| (order.key(addon).to_owned(), addon.id.clone());
    let compare = |a: &(String, String), b: &(String, String)| {
        let ordering = a.cmp(b);
        if descending {
            ordering.reverse()
        } else {
            ordering
        }
    };
    let after = page
        .after
        .as_ref()
        .map(|c| (c.k.clone().unwrap_or_default(), c.id.clone()));
    let mut services: Vec<&Addon> = ctx
        .settings
        .billing
        .catalogue
        .addons
        .iter()
        .filter(|a| req.category.is_empty() || a.category == req.category)
        .filter(|a| terms.iter().all(|(term, eq)| term.holds(a) == *eq))
        .filter(|a| {
            after
                .as_ref()
                .is_none_or(|last| compare(&position(a), last) == Ordering::Greater)
        })
        .collect();
    services.sort_by(|a, b| compare(&position(a), &position(b)));
    let next_page_token = page.finish(&mut services, |a| position(a));
    Ok(proto::ListAddonServicesResponse {
        services: services.into_iter().map(addon_proto).collect(),
        next_page_token,
    })
}
