use super::*;

#[test]
fn parent_list_reads_the_seeds_form() {
    let list: ParentList = "parent1:3128; parent2:8080;".parse().unwrap();
    assert_eq!(list.0.len(), 2);
    assert_eq!(list.0[1].addr.host, "parent2");
    let weighted: ParentList = "a:1|1.0; b:2|3".parse().unwrap();
    assert_eq!(weighted.0[1].weight, 3);
    assert_eq!(weighted.to_string(), "a:1; b:2|3;");
    assert!("a:1|0".parse::<ParentList>().is_err());
    assert_eq!(list.to_string(), "parent1:3128; parent2:8080;");
    assert_eq!(list.to_string().parse::<ParentList>().unwrap(), list);
    assert!("parent1".parse::<ParentList>().is_err());
    assert!("p:0;".parse::<ParentList>().is_err());
    assert!("p:70000;".parse::<ParentList>().is_err());
    assert!("p:1; p:1;".parse::<ParentList>().is_err());
}
