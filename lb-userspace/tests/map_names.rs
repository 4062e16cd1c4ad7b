//! The XDP object exports exactly the maps `lb_common::names` lists: the
//! program's statics carry the names (aya's `#[map]` takes only a literal),
//! and userspace finds its maps through the constants.

use std::collections::BTreeSet;

#[test]
fn the_object_has_exactly_the_named_maps() {
    let obj = lb_userspace::dataplane::xdp::EBPF_OBJECT;
    if obj.is_empty() {
        // Built without the BPF toolchain: only allowed when not required.
        assert!(
            option_env!("LB_REQUIRE_EBPF") != Some("1"),
            "LB_REQUIRE_EBPF=1 but the XDP object is empty"
        );
        eprintln!("no XDP object in this build: skipped");
        return;
    }
    let parsed = aya_obj::Object::parse(obj).expect("parsing the XDP object");
    let have: BTreeSet<&str> = parsed.maps.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = lb_common::names::ALL.into_iter().collect();
    assert_eq!(have, want);
    for p in lb_common::names::PINNED {
        assert!(want.contains(p), "{p} is pinned but not a map");
    }
}
