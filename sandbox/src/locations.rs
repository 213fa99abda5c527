//! Deterministic cash locations: the stores `GET /cash-locations` lists near a point, and the
//! reverse mapping from a location reference back to its id, name and address.
//!
//! Nothing here is stored. A location *is* its reference: standard base64 of
//! `GREENDOT-<store#>:lat=<lat 6dp>,lng=<lng 6dp>` (the format of the guide's example), its id is
//! a hash of that text, the brand follows from the store number and the street from another hash,
//! and the city is the nearest entry of a small table. So the same query always lists the same
//! stores (whatever the sandbox's seed), and a create request can be checked and given its
//! location name and address without the sandbox remembering which lists it served.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Searches further than this from every city in the table find nothing.
const MAX_CITY_DISTANCE_KM: f64 = 300.0;
const EARTH_RADIUS_KM: f64 = 6371.0088;
const KM_PER_MILE: f64 = 1.609_344;
const KM_PER_DEGREE_LAT: f64 = 111.32;

/// Brands, indexed by `store number % 6`, so the name can be recovered from a reference.
const BRANDS: [&str; 6] = [
    "CVS Pharmacy",
    "Walgreens",
    "7-Eleven",
    "Dollar General",
    "Walmart Supercenter",
    "Rite Aid",
];

const STREETS: [&str; 16] = [
    "Main St",
    "Oak Ave",
    "Broadway",
    "Market St",
    "Elm St",
    "Washington Blvd",
    "Park Ave",
    "Maple Dr",
    "Lincoln Ave",
    "Center St",
    "Pine St",
    "Sunset Blvd",
    "Highland Ave",
    "Lake St",
    "Jefferson St",
    "Grand Ave",
];

struct City {
    name: &'static str,
    state: &'static str,
    zip: u32,
    lat: f64,
    lng: f64,
}

const CITIES: [City; 22] = [
    city("New York", "NY", 10001, 40.7128, -74.0060),
    city("Los Angeles", "CA", 90012, 34.0522, -118.2437),
    city("Chicago", "IL", 60601, 41.8781, -87.6298),
    city("Houston", "TX", 77002, 29.7604, -95.3698),
    city("Phoenix", "AZ", 85003, 33.4484, -112.0740),
    city("Philadelphia", "PA", 19102, 39.9526, -75.1652),
    city("San Antonio", "TX", 78205, 29.4241, -98.4936),
    city("San Diego", "CA", 92101, 32.7157, -117.1611),
    city("Dallas", "TX", 75201, 32.7767, -96.7970),
    city("San Jose", "CA", 95110, 37.3382, -121.8863),
    city("Austin", "TX", 78701, 30.2672, -97.7431),
    city("Jacksonville", "FL", 32202, 30.3322, -81.6557),
    city("Columbus", "OH", 43215, 39.9612, -82.9988),
    city("Charlotte", "NC", 28202, 35.2271, -80.8431),
    city("Seattle", "WA", 98101, 47.6062, -122.3321),
    city("Denver", "CO", 80202, 39.7392, -104.9903),
    city("Boston", "MA", 2108, 42.3601, -71.0589),
    city("Atlanta", "GA", 30303, 33.7490, -84.3880),
    city("Miami", "FL", 33130, 25.7617, -80.1918),
    city("Sacramento", "CA", 95814, 38.5816, -121.4944),
    city("Las Vegas", "NV", 89101, 36.1699, -115.1398),
    city("Minneapolis", "MN", 55401, 44.9778, -93.2650),
];

const fn city(name: &'static str, state: &'static str, zip: u32, lat: f64, lng: f64) -> City {
    City {
        name,
        state,
        zip,
        lat,
        lng,
    }
}

/// One store as `GET /cash-locations` lists it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CashLocation {
    pub(crate) id: String,
    pub(crate) reference: String,
    pub(crate) name: String,
    pub(crate) street: String,
    pub(crate) city: String,
    pub(crate) state: String,
    pub(crate) zip_code: String,
    pub(crate) latitude: f64,
    pub(crate) longitude: f64,
    /// Miles from the searched point, two decimals.
    pub(crate) distance_miles: f64,
}

/// What a create request's location reference stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedLocation {
    pub(crate) id: String,
    pub(crate) name: String,
    /// One line: `1234 Main St, Sacramento, CA 95814`.
    pub(crate) address: String,
}

/// The stores near a point, nearest first; empty when the point is far from every known city.
pub(crate) fn search(latitude: f64, longitude: f64) -> Vec<CashLocation> {
    let Some((_, km)) = nearest_city(latitude, longitude) else {
        return Vec::new();
    };
    if km.is_nan() || km > MAX_CITY_DISTANCE_KM {
        return Vec::new();
    }
    // Seeded from the point as written to 6 dp, so the same query (up to float noise) always
    // gives the same stores, independent of the sandbox's seed.
    let mut rng = SplitMix64(fnv1a64(format!("{latitude:.6},{longitude:.6}").as_bytes()));
    let wanted = 8 + rng.below(5) as usize;
    let lng_scale = (KM_PER_DEGREE_LAT * latitude.to_radians().cos()).max(1.0);
    let mut out: Vec<CashLocation> = Vec::with_capacity(wanted);
    let mut stores_seen: Vec<u64> = Vec::with_capacity(wanted);
    let mut attempts = 0;
    while out.len() < wanted && attempts < 100 {
        attempts += 1;
        let brand = rng.below(BRANDS.len() as u64);
        let base = 1_002 + rng.below(39_000);
        let store = base - base % BRANDS.len() as u64 + brand;
        // sqrt spreads stores evenly over the disc instead of bunching them at the centre.
        let km = 0.3 + 14.7 * rng.unit().sqrt();
        let bearing = rng.unit() * std::f64::consts::TAU;
        let lat = (latitude + km * bearing.cos() / KM_PER_DEGREE_LAT).clamp(-90.0, 90.0);
        let lng = wrap_longitude(longitude + km * bearing.sin() / lng_scale);
        if stores_seen.contains(&store) {
            continue;
        }
        stores_seen.push(store);
        let text = reference_text(store, lat, lng);
        let Some(parsed) = parse_reference_text(&text) else {
            continue;
        };
        let d = describe(&parsed, &text);
        let miles = haversine_km(latitude, longitude, parsed.lat, parsed.lng) / KM_PER_MILE;
        out.push(CashLocation {
            id: location_id(&text),
            reference: base64::engine::general_purpose::STANDARD.encode(text.as_bytes()),
            name: d.name,
            street: d.street,
            city: d.city,
            state: d.state,
            zip_code: d.zip_code,
            latitude: parsed.lat,
            longitude: parsed.lng,
            distance_miles: (miles * 100.0).round() / 100.0,
        });
    }
    out.sort_by(|a, b| {
        a.distance_miles
            .total_cmp(&b.distance_miles)
            .then_with(|| a.id.cmp(&b.id))
    });
    out
}

/// Decodes a location reference this sandbox could have issued; `None` for anything else.
pub(crate) fn resolve(reference: &str) -> Option<ResolvedLocation> {
    // Padding is optional on the way in: a client that strips `=` still names the same store.
    let engine = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let bytes = engine.decode(reference.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let parsed = parse_reference_text(&text)?;
    let d = describe(&parsed, &text);
    Some(ResolvedLocation {
        id: location_id(&text),
        address: format!("{}, {}, {} {}", d.street, d.city, d.state, d.zip_code),
        name: d.name,
    })
}

/// `loc_` + 24 lowercase hex: the top 96 bits of FNV-1a-128 of the decoded reference text.
pub(crate) fn location_id(reference_text: &str) -> String {
    format!("loc_{:024x}", fnv1a128(reference_text.as_bytes()) >> 32)
}

fn reference_text(store: u64, lat: f64, lng: f64) -> String {
    format!("GREENDOT-{store}:lat={lat:.6},lng={lng:.6}")
}

struct ParsedReference {
    store: u64,
    lat: f64,
    lng: f64,
}

/// `GREENDOT-<digits>:lat=<-?d.dddddd>,lng=<-?d.dddddd>`, exactly.
fn parse_reference_text(text: &str) -> Option<ParsedReference> {
    let rest = text.strip_prefix("GREENDOT-")?;
    let (store, rest) = rest.split_once(":lat=")?;
    let (lat, lng) = rest.split_once(",lng=")?;
    if store.is_empty() || store.len() > 9 || !store.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let store = store.parse::<u64>().ok()?;
    let lat = parse_coordinate(lat, 90.0)?;
    let lng = parse_coordinate(lng, 180.0)?;
    Some(ParsedReference { store, lat, lng })
}

fn parse_coordinate(s: &str, limit: f64) -> Option<f64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = digits.split_once('.')?;
    let plain = (1..=3).contains(&int.len())
        && frac.len() == 6
        && int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit());
    if !plain {
        return None;
    }
    let v = s.parse::<f64>().ok()?;
    (v.abs() <= limit).then_some(v)
}

struct Description {
    name: String,
    street: String,
    city: String,
    state: String,
    zip_code: String,
}

/// Name and address of the store a reference names, from nothing but the reference.
fn describe(parsed: &ParsedReference, text: &str) -> Description {
    let brand = BRANDS
        .get((parsed.store % BRANDS.len() as u64) as usize)
        .copied()
        .unwrap_or(BRANDS[0]);
    let h = fnv1a64(text.as_bytes());
    let number = 100 + h % 9_800;
    let street = STREETS
        .get(((h >> 16) % STREETS.len() as u64) as usize)
        .copied()
        .unwrap_or(STREETS[0]);
    let (city, state, zip) = match nearest_city(parsed.lat, parsed.lng) {
        Some((c, _)) => (c.name, c.state, c.zip + ((h >> 32) % 20) as u32),
        None => (CITIES[0].name, CITIES[0].state, CITIES[0].zip),
    };
    Description {
        name: format!("{brand} #{}", parsed.store),
        street: format!("{number} {street}"),
        city: city.to_owned(),
        state: state.to_owned(),
        zip_code: format!("{zip:05}"),
    }
}

fn nearest_city(lat: f64, lng: f64) -> Option<(&'static City, f64)> {
    CITIES
        .iter()
        .map(|c| (c, haversine_km(lat, lng, c.lat, c.lng)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

fn haversine_km(lat1: f64, lng1: f64, lat2: f64, lng2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lng2 - lng1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().clamp(0.0, 1.0).asin()
}

fn wrap_longitude(lng: f64) -> f64 {
    if lng > 180.0 {
        lng - 360.0
    } else if lng < -180.0 {
        lng + 360.0
    } else {
        lng
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn fnv1a128(bytes: &[u8]) -> u128 {
    bytes
        .iter()
        .fold(0x6c62_272e_07bb_0142_62b8_2175_6295_c58d, |h, b| {
            (h ^ u128::from(*b)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b)
        })
}

/// SplitMix64: tiny, and fixed forever here, so a query's stores cannot change when a
/// dependency's generator does.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SACRAMENTO: (f64, f64) = (38.495133, -121.505336);

    #[test]
    fn same_query_same_stores() {
        let a = search(SACRAMENTO.0, SACRAMENTO.1);
        let b = search(SACRAMENTO.0, SACRAMENTO.1);
        assert_eq!(a, b);
        assert!((8..=12).contains(&a.len()), "{}", a.len());
        assert_ne!(a, search(40.7128, -74.0060));
    }

    #[test]
    fn stores_are_near_sorted_and_well_formed() {
        let list = search(SACRAMENTO.0, SACRAMENTO.1);
        for pair in list.windows(2) {
            assert!(pair[0].distance_miles <= pair[1].distance_miles);
        }
        for l in &list {
            assert!(l.distance_miles <= 15.0 / KM_PER_MILE + 0.5, "{l:?}");
            assert_eq!(l.id.len(), 4 + 24);
            assert!(l.id.starts_with("loc_"));
            assert!(
                l.id[4..]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert_eq!(l.city, "Sacramento");
            assert_eq!(l.state, "CA");
            assert_eq!(l.zip_code.len(), 5);
            assert!(BRANDS.iter().any(|b| l.name.starts_with(b)), "{}", l.name);
        }
    }

    #[test]
    fn references_round_trip_to_the_listed_store() {
        for l in search(SACRAMENTO.0, SACRAMENTO.1) {
            let r = resolve(&l.reference).expect("listed reference resolves");
            assert_eq!(r.id, l.id);
            assert_eq!(r.name, l.name);
            assert_eq!(
                r.address,
                format!("{}, {}, {} {}", l.street, l.city, l.state, l.zip_code)
            );
            // Unpadded base64 names the same store.
            assert_eq!(resolve(l.reference.trim_end_matches('=')), Some(r));
        }
    }

    #[test]
    fn the_guides_example_reference_resolves() {
        let r = resolve("R1JFRU5ET1QtMjQzNDpsYXQ9MzguNDk1MTMzLGxuZz0tMTIxLjUwNTMzNg==")
            .expect("guide reference");
        assert_eq!(
            r.id,
            location_id("GREENDOT-2434:lat=38.495133,lng=-121.505336")
        );
        assert!(r.name.ends_with("#2434"));
        assert!(r.address.ends_with(&format!(
            "Sacramento, CA {}",
            &r.address[r.address.len() - 5..]
        )));
    }

    #[test]
    fn foreign_references_are_refused() {
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        for bad in [
            "not base64 at all!",
            &enc("GREENDOT-12:lat=38.5,lng=-121.5"),
            &enc("WALMART-12:lat=38.495133,lng=-121.505336"),
            &enc("GREENDOT-:lat=38.495133,lng=-121.505336"),
            &enc("GREENDOT-12:lat=98.495133,lng=-121.505336"),
            &enc("GREENDOT-12:lat=38.495133,lng=-121.505336 "),
            "",
        ] {
            assert_eq!(resolve(bad), None, "{bad}");
        }
    }

    #[test]
    fn far_from_every_city_finds_nothing() {
        assert!(search(0.0, 0.0).is_empty());
        assert!(search(64.8378, -147.7164).is_empty()); // Fairbanks, AK
    }
}
