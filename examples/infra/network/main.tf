terraform {
  required_version = ">= 1.5"
}

variable "cidr" {
  type    = string
  default = "10.20.0.0/16"
}

resource "terraform_data" "vpc" {
  input = {
    cidr = var.cidr
    name = "example-vpc"
  }
}

resource "terraform_data" "subnets" {
  for_each = toset(["a", "b"])
  input    = cidrsubnet(var.cidr, 8, index(["a", "b"], each.key))
}

output "vpc_cidr" {
  value = terraform_data.vpc.output.cidr
}
