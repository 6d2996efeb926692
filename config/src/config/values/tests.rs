use super::*;

#[test]
fn byte_sizes_take_suffixes() {
    assert_eq!("512K".parse::<ByteSize>().unwrap().0, 512 * 1024);
    assert_eq!("256m".parse::<ByteSize>().unwrap().0, 256 << 20);
    assert_eq!("2GB".parse::<ByteSize>().unwrap().0, 2 << 30);
    assert_eq!("1000".parse::<ByteSize>().unwrap().0, 1000);
    assert_eq!(ByteSize(256 << 20).to_string(), "256M");
    assert!("banana".parse::<ByteSize>().is_err());
}

#[test]
fn port_lists_take_ports_and_ranges() {
    let list: PortList = "80, 443 1025-65535".parse().unwrap();
    assert!(list.contains(80) && list.contains(1025) && list.contains(65535));
    assert!(!list.contains(25) && !list.contains(1024));
    assert_eq!(list.to_string(), "80, 443, 1025-65535");
    assert_eq!(list.to_string().parse::<PortList>().unwrap(), list);
    assert!("".parse::<PortList>().unwrap().0.is_empty());
    for bad in ["0", "70000", "10-5", "http", "1-2-3"] {
        assert!(bad.parse::<PortList>().is_err(), "{bad}");
    }
}
